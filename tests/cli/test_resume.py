"""A killed search resumes from its last checkpoint and ends where an uninterrupted one does;
evolution workers started together on a run share its study; a non-finite loss stops the run
with one line and keeps the last good checkpoint."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch

from nas.cli import search
from nas.training.search import SearchModule

from .conftest import TINY

EPOCHS = 3
SETTINGS = [o for o in TINY if not o.startswith("trainer.max_epochs")] + [
    f"trainer.max_epochs={EPOCHS}",
    "retrain.enabled=false",
    "task.num_train=2048",
]


def start_search(run_dir, data_dir, *extra):
    command = [
        sys.executable,
        "-c",
        "from nas.cli.search import main; main()",
        f"hydra.run.dir={run_dir}",
        f"paths.data_dir={data_dir}",
        *SETTINGS,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every run
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    return out


@pytest.mark.slow  # two or three nas-search processes: minutes on 2 cores
def test_killed_search_resumes_to_the_same_result(tmp_path):
    data = tmp_path / "data"
    finish(start_search(tmp_path / "whole", data))
    expected = (tmp_path / "whole" / "best_arch.yaml").read_text()

    run_dir = tmp_path / "killed"
    process = start_search(run_dir, data)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    size = -1
    while process.poll() is None and time.time() < deadline:  # until the first checkpoint is whole
        if last.is_file() and last.stat().st_size == size:
            break
        size = last.stat().st_size if last.is_file() else -1
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "best_arch.yaml").exists(), "the search ended before it was killed"
    done_epochs = torch.load(last, weights_only=True)["epoch"] + 1
    assert 1 <= done_epochs < EPOCHS

    finish(start_search(run_dir, data, f"resume={run_dir}"))
    assert (run_dir / "best_arch.yaml").read_text() == expected


@pytest.mark.slow  # two or three nas-search processes: minutes on 2 cores
def test_evolution_workers_started_together_add_only_the_missing_trials(tmp_path):
    """The README's recipe for more workers, two at once on a finished run: each resumes the
    supernet, and together they bring the study to population * generations trials, no more."""
    run_dir, data = tmp_path / "run", tmp_path / "data"
    evolution = ["strategy=evolution", "strategy.population=4"]
    finish(start_search(run_dir, data, *evolution, "strategy.generations=1"))
    workers = [
        start_search(run_dir, data, *evolution, "strategy.generations=3", f"resume={run_dir}", f"seed={seed}")
        for seed in (1, 2)
    ]
    for worker in workers:
        finish(worker)
    study = optuna.load_study(study_name="evolution", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    states = [trial.state for trial in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 12


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(config, tmp_path, monkeypatch, capsys):
    step = SearchModule.step

    def poisoned(self, loss, optimizer_index=0):  # training diverges in the second epoch
        return step(self, loss * float("nan") if self.current_epoch == 1 else loss, optimizer_index)

    monkeypatch.setattr(SearchModule, "step", poisoned)
    cfg = config("search", *SETTINGS)
    with pytest.raises(SystemExit) as exit_info:
        search.run(cfg)
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("nas-search: error: non-finite loss (nan) at training step ")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    weights = [v for v in checkpoint["state_dict"].values() if torch.is_tensor(v) and v.is_floating_point()]
    assert weights and all(torch.isfinite(w).all() for w in weights)
