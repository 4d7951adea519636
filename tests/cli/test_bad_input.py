"""Every bad input ends a CLI with exit code 1 and one line on stderr, before any training.

Run in-process (each CLI's `run` with a composed config, as Hydra would call it) to stay fast.
"""
from pathlib import Path

import pytest

from nas.cli import export as export_cli
from nas.cli import retrain as retrain_cli
from nas.cli import search as search_cli
from tests.cli.conftest import TINY

CLIS = {"search": search_cli.run, "retrain": retrain_cli.run, "export": export_cli.run}

# (config, overrides, a word the message must contain); {tmp} is the test's tmp_path
BAD = [
    ("search", ["trainer.max_epochs=-2"], "trainer.max_epochs"),
    ("search", ["trainer.max_epochs=abc"], "trainer.max_epochs"),
    ("search", ["trainer.max_epochs=1e3"], "trainer.max_epochs"),
    ("search", ["trainer.max_epochs=0"], "trainer.max_epochs"),
    ("search", ["trainer.devices=0"], "trainer.devices"),
    ("search", ["seed=abc"], "seed"),
    ("search", ["seed=-1"], "seed"),
    ("search", ["retrain.max_epochs=0"], "retrain.max_epochs"),
    ("search", ["task.batch_size=0"], "batch_size"),
    ("search", ["resume={tmp}/nowhere"], "resume"),
    ("search", ["resume={tmp}"], "resume"),
    ("retrain", ["arch={tmp}/missing.yaml", "trainer.max_epochs=abc"], "trainer.max_epochs"),
    ("retrain", ["arch={tmp}/missing.yaml"], "missing.yaml"),
    ("export", ["ckpt={tmp}/missing.ckpt", "out={tmp}/afile/out"], "afile"),
    ("export", ["ckpt={tmp}/missing.ckpt", "out={tmp}/out"], "missing.ckpt"),
]


@pytest.mark.parametrize("name,overrides,word", BAD, ids=[" ".join(o) for _, o, _ in BAD])
def test_bad_input_is_one_line(name, overrides, word, config, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder\n")
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    extra = {"search": TINY, "retrain": TINY[:-2], "export": []}[name]
    cfg = config(name, *extra, *overrides)
    with pytest.raises(SystemExit) as exit_:
        CLIS[name](cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and word in lines[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before any training


def test_a_second_process_on_a_locked_run_stops_naming_the_holder(config, tmp_path, capsys):
    from filelock import FileLock
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.pid").write_text("4242\n")
    with FileLock(str(run_dir / "run.lock")):  # another process's lock: filelock locks per object
        cfg = config("search", *TINY, f"resume={run_dir}", run_dir=run_dir)
        with pytest.raises(SystemExit) as exit_:
            search_cli.run(cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "4242" in err[0] and "in use" in err[0]


def test_a_failed_run_says_failed_in_its_status(config, tmp_path, monkeypatch, capsys):
    import json
    from nas import pipeline

    def broken(cfg, run_dir):
        raise FloatingPointError("loss is nan")

    monkeypatch.setattr(pipeline, "search", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        search_cli.run(config("search", *TINY))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "loss is nan" in status["error"]
    assert status["started"] <= status["updated"]
    assert lock_is_free(run_dir / "run.lock")


def lock_is_free(path: Path) -> bool:
    """The run released its lock: another process may take it at once."""
    from filelock import FileLock
    lock = FileLock(str(path))
    lock.acquire(timeout=0)
    lock.release()
    return True
