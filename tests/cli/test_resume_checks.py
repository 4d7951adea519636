"""Resuming, checkpoints and run folders under bad or tampered input (issue 32): each refusal is
one line with exit code 1 before any training, and leaves the run folder as it was.

One tiny search run (the real command, so that it has its .hydra/ record) is shared by the
module; every test works on a copy of it, as a run killed during its search.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nas.cli import common
from nas.cli import export as export_cli
from nas.cli import rank as rank_cli
from nas.cli import retrain as retrain_cli
from nas.cli import search as search_cli
from nas.run_folder import read_status, write_status
from tests.helpers import TINY, TINY_TASK, compose_config

ROOT = Path(__file__).resolve().parents[2]
CLIS = {"search": search_cli.run, "retrain": retrain_cli.run, "export": export_cli.run, "rank": rank_cli.run}
# how the shared run was started; a resume that repeats these has the run's own settings
STARTED = [*TINY, "space=tiny", "retrain.max_epochs=1"]
RETRAIN = [*TINY_TASK, "space=tiny", "retrain.max_epochs=1"]  # nas-retrain's, in the retrain folder


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny GDAS search (retrained and exported), and beside it a nas-retrain run
    folder made of its retraining: that command's .hydra/config.yaml, checkpoints and status."""
    root = tmp_path_factory.mktemp("resume")
    run = root / "run"
    subprocess.run(
        [sys.executable, "-m", "nas.cli.search", *STARTED, f"paths.data_dir={root / 'data'}", f"hydra.run.dir={run}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    retrained = root / "retrained"
    shutil.copytree(run / "retrain" / "checkpoints", retrained / "checkpoints")
    (retrained / ".hydra").mkdir()
    cfg = compose_config("retrain", retrained, [*RETRAIN, f"arch={run / 'best_arch.yaml'}"])
    OmegaConf.save(cfg, retrained / ".hydra" / "config.yaml")  # as Hydra writes it: unresolved
    write_status(retrained, "done")
    return root


def killed(finished: Path, tmp_path: Path, name: str = "run", record: bool = True) -> Path:
    """A copy of a run folder as a kill during its search (or retraining) leaves it; without
    `record`, as a folder from before runs kept their settings (no .hydra/)."""
    run = tmp_path / name
    shutil.copytree(finished / name, run)
    for part in ("retrain", "export"):
        shutil.rmtree(run / part, ignore_errors=True)
    for part in ("best_arch.yaml", "summary.txt", "margins.yaml"):
        (run / part).unlink(missing_ok=True)
    status = read_status(run)
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "pid": 999999}))
    if not record:
        shutil.rmtree(run / ".hydra")
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(name: str, cfg, capsys) -> str:
    """Run a CLI in-process as Hydra would; its one stderr line."""
    with pytest.raises(SystemExit) as exit_:
        CLIS[name](cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- 1 and 3: a resume that would continue a run with other settings, or by another command ------
# (command, folder, overrides, words the line must hold); the run was started with STARTED
CHANGED = [
    ("search", "run", ["space=quickstart"], ["space.file", "tiny.yaml' -> ", "quickstart.yaml'"]),
    ("search", "run", ["strategy=darts"], ["strategy.name 'gdas' -> 'darts'"]),
    ("search", "retrained", [], ["a run folder of nas-retrain, not of nas-search"]),
    ("retrain", "run", [], ["a run folder of nas-search, not of nas-retrain"]),
    ("search", "run", ["seed=1"], ["seed 0 -> 1"]),
    ("search", "run", ["search.lr=0.01"], ["search.lr 0.003 -> 0.01"]),
    ("search", "run", ["seed=2", "search.lr=0.01"], ["seed 0 -> 2, search.lr 0.003 -> 0.01"]),
    ("search", "run", ["trainer.max_epochs=3"], ["trainer.max_epochs 1 -> 3", "also to train longer"]),
    ("search", "run", ["task.num_train=512"], ["task.num_train 256 -> 512"]),
    ("search", "run", ["retrain.lr=0.01"], ["retrain.lr 0.003 -> 0.01"]),
    ("search", "run", ["strategy=random"], ["strategy.name 'gdas' -> 'random'"]),
]


@pytest.mark.parametrize(
    "name,folder,overrides,words", CHANGED, ids=[f"{c[0]} {c[1]} {' '.join(c[2])}" for c in CHANGED]
)
def test_a_resume_with_other_settings_is_refused_naming_each_change(
    name, folder, overrides, words, finished, tmp_path, capsys
):
    run = killed(finished, tmp_path, folder)
    before = snapshot(run)
    base = STARTED if name == "search" else [*RETRAIN, f"arch={finished / 'run' / 'best_arch.yaml'}"]
    cfg = compose_config(name, run, [*base, f"paths.data_dir={finished / 'data'}", f"resume={run}", *overrides])
    line = refused(name, cfg, capsys)
    assert line.startswith(f"nas-{name}: error: resume={run}: ")
    assert all(word in line for word in words), line
    assert snapshot(run) == before  # nothing written: not .hydra/, not status.json, no checkpoint


# without .hydra/ (a folder from before runs kept it) the checkpoint is compared with the model
# this run builds: the same four cases of issue 32 are one line from there
NO_RECORD = [
    (
        "search",
        "run",
        ["space=quickstart"],
        "the run trained another model: space.name is 'tiny' there, 'quickstart' in this run",
    ),
    ("search", "run", ["strategy=darts"], "its weights do not fit this run's search: it holds 'strategy.tau'"),
    ("search", "retrained", [], "written by a retraining (one arch), not by nas-search's search"),
    ("retrain", "run", [], "written by nas-search's search (a supernet), not by a retraining"),
]


@pytest.mark.parametrize("name,folder,overrides,words", NO_RECORD, ids=[f"{c[0]} {c[1]} {c[2]}" for c in NO_RECORD])
def test_without_a_record_the_checkpoint_is_checked_against_this_run(
    name, folder, overrides, words, finished, tmp_path, capsys
):
    run = killed(finished, tmp_path, folder, record=False)
    checkpoints = snapshot(run / "checkpoints")
    base = STARTED if name == "search" else [*RETRAIN, f"arch={finished / 'run' / 'best_arch.yaml'}"]
    cfg = compose_config(name, run, [*base, f"paths.data_dir={finished / 'data'}", f"resume={run}", *overrides])
    line = refused(name, cfg, capsys)
    assert f"resume checkpoint {run / 'checkpoints' / 'last.ckpt'}: {words}" in line, line
    assert snapshot(run / "checkpoints") == checkpoints


def test_a_resume_with_the_runs_settings_goes_on_and_keeps_its_first_start(finished, tmp_path, caplog):
    """Options read only after training (how the arch is decided, whether to retrain) may change:
    scripts decide a finished search again this way. status.json keeps when the run started."""
    run = killed(finished, tmp_path)
    first = read_status(run)["started"]
    cfg = compose_config(
        "search",
        run,
        [
            *STARTED,
            f"paths.data_dir={finished / 'data'}",
            f"resume={run}",
            "strategy.decide.rule=argmax",
            "search.eval_batches=1",
            "retrain.enabled=false",
        ],
    )
    outcome = search_cli.run(cfg)
    assert outcome is not None and (run / "best_arch.yaml").is_file()
    status = read_status(run)
    assert status["state"] == "done" and status["started"] == first and status["resumed"] >= first
    assert f"Restoring states from the checkpoint path at {run / 'checkpoints' / 'last.ckpt'}" in caplog.text


def test_a_folder_without_a_record_is_warned_about_and_resumed(finished, tmp_path, caplog):
    run = killed(finished, tmp_path, record=False)
    cfg = compose_config(
        "search", run, [*STARTED, f"paths.data_dir={finished / 'data'}", f"resume={run}", "retrain.enabled=false"]
    )
    assert search_cli.run(cfg) is not None
    assert "no .hydra/config.yaml in it, so the settings the run was started with are not checked" in caplog.text


def test_the_real_command_leaves_the_record_as_it_was_when_it_refuses(finished, tmp_path):
    """Hydra writes .hydra/ before any code of ours runs; on resume= it writes nothing
    (configs/hydra/default.yaml), so a refused resume cannot have replaced the run's settings."""
    run = killed(finished, tmp_path)
    before = snapshot(run / ".hydra")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.cli.search",
            *STARTED,
            f"paths.data_dir={finished / 'data'}",
            f"resume={run}",
            "seed=1",
            "search.lr=0.01",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "seed 0 -> 1, search.lr 0.003 -> 0.01" in lines[0], done.stderr
    assert snapshot(run / ".hydra") == before


def test_evolution_workers_may_join_with_their_own_seed_and_generations():
    """README: more workers on one study, `resume=<run> seed=2 retrain.enabled=false` (and more
    generations); what trains the supernet must still match."""

    def settings(*overrides):
        return OmegaConf.to_container(compose_config("search", Path("/run"), [*TINY, "strategy=evolution", *overrides]))

    started = settings()
    assert (
        common.changed_settings(
            started,
            settings("seed=2", "retrain.enabled=false", "retrain.lr=0.1", "strategy.generations=9"),
            "nas-search",
        )
        == []
    )
    assert common.changed_settings(started, settings("seed=2", "strategy.fair=false"), "nas-search") == [
        "strategy.fair True -> False"
    ]
    gdas = OmegaConf.to_container(compose_config("search", Path("/run"), TINY))
    assert common.changed_settings(gdas, {**gdas, "seed": 2}, "nas-search") == ["seed 0 -> 2"]


def test_a_decision_only_constraint_may_change_and_a_sampling_one_may_not():
    """DARTS and GDAS train unconstrained and decide within the limits (so nas-decide may decide a
    finished search under a budget); random search samples only archs within them."""
    gdas = OmegaConf.to_container(compose_config("search", Path("/run"), TINY))
    budget = {**gdas, "strategy": {**gdas["strategy"], "constraints": {"state_mib": 0.5}}}
    assert common.changed_settings(gdas, budget, "nas-search") == []
    random = OmegaConf.to_container(compose_config("search", Path("/run"), [*TINY, "strategy=random"]))
    budget = {**random, "strategy": {**random["strategy"], "constraints": {"params": 1e5}}}
    assert common.changed_settings(random, budget, "nas-search") == [
        "strategy.constraints None -> (unset)",
        "strategy.constraints.params (unset) -> 100000.0",
    ]


def test_the_options_a_resume_may_change_are_options_of_their_strategy():
    import dataclasses

    from nas.strategies import STRATEGIES

    for name, options in common._AFTER_STRATEGY.items():
        accepted = {f.name for f in dataclasses.fields(STRATEGIES.get(name).Config)}
        assert set(options) <= accepted, name


# -- 2: tampered checkpoints ---------------------------------------------------------------------
def tampered(source: Path, target: Path, edit) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def nan_weight(checkpoint: dict) -> None:
    name = next(k for k, v in checkpoint["state_dict"].items() if torch.is_tensor(v) and v.is_floating_point())
    checkpoint["state_dict"][name][0] = float("nan")


def first_layer(checkpoint: dict) -> dict:
    hparams = checkpoint["hyper_parameters"]  # the arch in the model's spec, or beside the space
    return (hparams["model"] if "model" in hparams else hparams)["arch"]["layers"][0]


def outside(checkpoint: dict) -> None:
    first_layer(checkpoint)["attention"] = "bogus"


def wider(checkpoint: dict) -> None:
    first_layer(checkpoint)["ffn_dim"] = 1000


# (command, which checkpoint, how it is tampered with, overrides, what the line must hold)
TAMPERED = [
    ("export", "retrain/checkpoints/best.ckpt", outside, [], "attention 'bogus' is not in space 'tiny'"),
    ("export", "retrain/checkpoints/best.ckpt", wider, [], "ffn_dim 1000 is not in space 'tiny'"),
    ("export", "retrain/checkpoints/best.ckpt", nan_weight, [], "holds NaN or inf values"),
    ("retrain", "checkpoints/last.ckpt", nan_weight, ["retrain.init=inherit"], "holds NaN or inf values"),
    (
        "retrain",
        "checkpoints/last.ckpt",
        nan_weight,
        ["retrain.init=scratch", "retrain.distill=0.5"],
        "holds NaN or inf values",
    ),
]


@pytest.mark.parametrize(
    "name,source,edit,overrides,words", TAMPERED, ids=[f"{c[0]} {c[2].__name__} {' '.join(c[3])}" for c in TAMPERED]
)
def test_a_tampered_checkpoint_is_one_line_naming_it(name, source, edit, overrides, words, finished, tmp_path, capsys):
    ckpt = tampered(finished / "run" / source, tmp_path / "tampered.ckpt", edit)
    if name == "export":
        cfg = compose_config(
            "export", tmp_path / "x", [f"ckpt={ckpt}", f"out={tmp_path / 'out'}", f"paths.data_dir={finished / 'data'}"]
        )
    else:
        cfg = compose_config(
            "retrain",
            tmp_path / "run",
            [
                *RETRAIN,
                f"arch={finished / 'run' / 'best_arch.yaml'}",
                f"retrain.supernet_ckpt={ckpt}",
                *overrides,
                f"paths.data_dir={finished / 'data'}",
            ],
        )
    line = refused(name, cfg, capsys)
    assert str(ckpt) in line and words in line, line
    if "NaN" in words:
        assert "weight '" in line  # the first non-finite tensor, by name
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "edit,words",
    [(wider, "arch.layers is"), (nan_weight, "holds NaN or inf values")],
    ids=["another arch", "NaN weights"],
)
def test_nas_retrain_refuses_to_resume_a_tampered_checkpoint(edit, words, finished, tmp_path, capsys):
    run = killed(finished, tmp_path, "retrained")
    tampered(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt", edit)
    before = snapshot(run / "checkpoints")
    cfg = compose_config(
        "retrain",
        run,
        [
            *RETRAIN,
            f"arch={finished / 'run' / 'best_arch.yaml'}",
            f"paths.data_dir={finished / 'data'}",
            f"resume={run}",
        ],
    )
    line = refused("retrain", cfg, capsys)
    assert f"resume checkpoint {run / 'checkpoints' / 'last.ckpt'}: " in line and words in line, line
    assert snapshot(run / "checkpoints") == before


# -- 4 and 5: every option of every stage checked before any training --------------------------
UP_FRONT = [
    ("search", ["retrain.init=bogus"], "retrain.init='bogus': allowed: scratch, inherit"),
    ("search", ["retrain.enabled=maybe"], "retrain.enabled='maybe': must be true or false"),
    ("search", ["export.quantize=maybe"], "export.quantize='maybe': must be true or false"),
    ("search", ["export.overwrite=2"], "export.overwrite=2: must be true or false"),
    ("retrain", ["retrain.init=bogus"], "retrain.init='bogus': allowed: scratch, inherit"),
    ("export", ["quantize=maybe"], "quantize='maybe': must be true or false"),
    ("export", ["overwrite=2"], "overwrite=2: must be true or false"),
    ("rank", ["budget.lr=0"], "budget.lr=0: must be a finite number > 0"),
    ("rank", ["budget.warmup_steps=-5"], "budget.warmup_steps=-5: must be a whole number >= 0"),
    ("rank", ["calibrate.steps=2", "calibrate.lr=0"], "calibrate.lr=0: must be a finite number > 0"),
    ("rank", ["search_pick=maybe"], "search_pick='maybe': must be true or false"),
    (
        "rank",
        ["+budget.bogus=1"],
        "unknown option budget.bogus for nas-rank; allowed: max_epochs, lr, weight_decay, "
        "warmup_steps, gradient_clip_val",
    ),
    ("rank", ["budget.lr=abc"], "budget.lr='abc': must be a number"),
]


@pytest.mark.parametrize("name,overrides,words", UP_FRONT, ids=[f"{c[0]} {' '.join(c[1])}" for c in UP_FRONT])
def test_a_bad_option_of_any_stage_is_refused_before_training(name, overrides, words, finished, tmp_path, capsys):
    run = tmp_path / "run"
    base = {
        "search": STARTED,
        "retrain": [*RETRAIN, f"arch={finished / 'run' / 'best_arch.yaml'}"],
        "export": [f"ckpt={finished / 'run' / 'retrain' / 'checkpoints' / 'best.ckpt'}", f"out={tmp_path / 'out'}"],
        "rank": [f"run={finished / 'run'}", "archs=2", f"standalone_dir={tmp_path / 'standalone'}"],
    }[name]
    cfg = compose_config(name, run, [*base, f"paths.data_dir={finished / 'data'}", *overrides])
    line = refused(name, cfg, capsys)
    assert line == f"nas-{name}: error: {words}"
    assert not (run / "checkpoints").exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "standalone").exists() and not (finished / "run" / "rank").exists()


def test_status_keeps_the_first_start_and_the_last_resume(tmp_path, monkeypatch):
    import datetime

    times = iter(
        [
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T01:00:00+00:00",
            "2026-01-02T00:00:00+00:00",
            "2026-01-02T01:00:00+00:00",
            "2026-01-03T00:00:00+00:00",
        ]
    )

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromisoformat(next(times))

    monkeypatch.setattr(datetime, "datetime", Clock)
    write_status(tmp_path, "running")
    write_status(tmp_path, "failed", error="killed")
    write_status(tmp_path, "running", resumed=True)
    write_status(tmp_path, "done")
    status = read_status(tmp_path)
    assert (status["started"], status["resumed"], status["updated"]) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-02T00:00:00+00:00",
        "2026-01-02T01:00:00+00:00",
    )
    write_status(tmp_path, "running")  # a new run in the folder (no resume=) starts the clock again
    assert read_status(tmp_path)["started"] == "2026-01-03T00:00:00+00:00" and "resumed" not in read_status(tmp_path)
