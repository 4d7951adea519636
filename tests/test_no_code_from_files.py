"""No file names code: a task read back from disk (a checkpoint's hparams, a run folder's
.hydra/config.yaml, a standalone job) goes through the task registry and its typed config,
never through `hydra.utils.instantiate`. A Hydra `_target_` payload that would write a marker
file, planted at several depths of every such record, ends the command in one line with a
non-zero exit, and the marker never appears."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import hydra
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from nas import pipeline
from nas.cli import export as export_cli
from nas.cli import rank as rank_cli
from nas.cli import retrain as retrain_cli
from nas.cli import search as search_cli
from nas.errors import ConfigError
from nas.jobs.job import Budget, Job
from nas.model import ModelSpec
from nas.training import standalone
from nas.training.search import load_supernet
from tests.cli.conftest import TINY, compose_config

NAS = Path(__file__).resolve().parents[1] / "nas"


def payload(marker: Path) -> dict:
    """What Hydra would turn into `Path(marker).write_text("pwned")`."""
    return {
        "_target_": "pathlib.Path.write_text",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "pwned"],
    }


def planted(record: dict, marker: Path) -> dict[str, object]:
    """`record` with the payload at several depths: as the whole record, as keys beside its
    own, as an option's value, and two levels inside an option."""
    evil = payload(marker)
    return {
        "the whole record": evil,
        "keys beside the record's": {**record, **evil},
        "an option's value": {**record, "seed": evil},
        "two levels down": {**record, "seed": {"inner": [evil]}},
    }


PLACES = ["the whole record", "keys beside the record's", "an option's value", "two levels down"]


def test_the_payload_does_run_when_instantiated(tmp_path):
    """The tests below can fail: handed to Hydra, the same payload writes its marker."""
    marker = tmp_path / "pwned"
    hydra.utils.instantiate(payload(marker))
    assert marker.read_text() == "pwned"


def test_no_instantiate_outside_the_command_line_config():
    """`hydra.utils.instantiate` is called only on the config composed on the command line
    (its logger), never on anything read back from a file."""
    calls = []
    for file in NAS.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("instantiate"):
                calls.append((file.relative_to(NAS).as_posix(), ast.unparse(node.args[0])))
    assert calls and set(calls) == {("pipeline.py", "cfg.logger")}, calls


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished search with its retraining, and the .hydra/config.yaml Hydra writes."""
    run_dir = tmp_path_factory.mktemp("crafted") / "run"
    cfg = compose_config(
        "search",
        run_dir,
        [*TINY, "strategy=random", "strategy.samples=2", "retrain.max_epochs=1", "export.enabled=false"],
    )
    pipeline.run(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def one_line_exit(run, cfg, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    assert exit_.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def rewrite_checkpoint(source: Path, target: Path, change) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, target)
    return target


@pytest.mark.parametrize("place", PLACES)
def test_export_refuses_a_task_config_that_names_code(finished_run, tmp_path, capsys, place):
    marker = tmp_path / "pwned"
    best = finished_run / "retrain" / "checkpoints" / "best.ckpt"

    def plant(checkpoint):
        record = checkpoint["hyper_parameters"]["task_config"]
        checkpoint["hyper_parameters"]["task_config"] = planted(record, marker)[place]

    ckpt = rewrite_checkpoint(best, tmp_path / "crafted.ckpt", plant)
    cfg = compose_config("export", tmp_path / "cmd", [f"ckpt={ckpt}", f"out={tmp_path / 'out'}"])
    line = one_line_exit(export_cli.run, cfg, capsys)
    assert "crafted.ckpt" in line and ("_target_" in line or "_args_" in line or "seed" in line), line
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("entry", ["space", "shape", "few_shot"])
@pytest.mark.parametrize("distill", [False, True])
def test_retrain_from_a_supernet_checkpoint_that_names_code(finished_run, tmp_path, capsys, entry, distill):
    """nas-retrain retrain.init=inherit and distillation read the search's checkpoint."""
    marker = tmp_path / "pwned"
    last = finished_run / "checkpoints" / "last.ckpt"

    def plant(checkpoint):
        meta = checkpoint["supernet"]
        meta[entry] = {**meta[entry], "extra": payload(marker)} if isinstance(meta[entry], dict) else payload(marker)

    ckpt = rewrite_checkpoint(last, tmp_path / "crafted.ckpt", plant)
    arch = finished_run / "best_arch.yaml"
    how = ["retrain.distill=0.5"] if distill else ["retrain.init=inherit"]
    cfg = compose_config(
        "retrain",
        tmp_path / "cmd",
        [*TINY[:-2], f"arch={arch}", f"retrain.supernet_ckpt={ckpt}", "retrain.max_epochs=1", *how],
    )
    line = one_line_exit(retrain_cli.run, cfg, capsys)
    assert "crafted.ckpt" in line, line
    assert not marker.exists()


@pytest.mark.parametrize("place", PLACES)
def test_rank_refuses_a_run_config_that_names_code(finished_run, tmp_path, capsys, place):
    marker = tmp_path / "pwned"
    run = tmp_path / "shared_run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("retrain", "rank", "tensorboard"))
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    saved["task"] = planted(saved["task"], marker)[place]
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    cfg = compose_config(
        "rank", tmp_path / "cmd", [f"run={run}", "archs=2", "budget.max_epochs=1", "jobs.executor=debug"]
    )
    line = one_line_exit(rank_cli.run, cfg, capsys)
    assert "config.yaml" in line, line
    assert not marker.exists() and not (run / "rank" / "standalone").exists()


@pytest.mark.parametrize("place", PLACES)
def test_a_standalone_job_refuses_a_task_that_names_code(finished_run, tmp_path, place):
    marker = tmp_path / "pwned"
    saved = yaml.safe_load((finished_run / ".hydra" / "config.yaml").read_text())
    supernet = load_supernet(finished_run / "checkpoints" / "last.ckpt")
    model = ModelSpec(supernet.space.largest(), supernet.space, supernet.shape).to_dict()
    job = Job(
        model,
        planted(saved["task"], marker)[place],
        str(tmp_path),
        0,
        Budget(max_epochs=1),
        {"accelerator": "cpu", "devices": 1},
    )
    with pytest.raises(ConfigError, match="standalone job") as err:
        standalone.train(job)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("place", PLACES)
def test_resume_refuses_a_run_config_that_names_code(finished_run, tmp_path, capsys, place):
    """nas-search resume= compares the run's .hydra/config.yaml with this command's settings:
    read as data, a payload in it is a changed setting, never code that runs."""
    marker = tmp_path / "pwned"
    run = tmp_path / "shared_run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("retrain", "tensorboard"))
    (run / "status.json").write_text('{"state": "running"}')  # not done: a resume would train on
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    saved["task"] = planted(saved["task"], marker)[place]
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    cfg = compose_config(
        "search",
        run,
        [
            *TINY,
            "strategy=random",
            "strategy.samples=2",
            "retrain.max_epochs=1",
            "export.enabled=false",
            f"resume={run}",
        ],
    )
    line = one_line_exit(search_cli.run, cfg, capsys)
    assert "config.yaml" in line and "task" in line, line
    assert not marker.exists()
