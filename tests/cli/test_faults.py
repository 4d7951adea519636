"""Damaged files in a run folder: a cut-off checkpoint falls back to the one before it, a damaged
Optuna database stops the run with one line naming it."""

import zipfile

import pytest
import torch

from nas.cli import search as search_cli
from nas.errors import ConfigError
from nas.pipeline import check_storage
from nas.training.checkpoint import resumable, whole
from tests.helpers import TINY


def _save(path, value):
    torch.save(
        {
            "state_dict": {"w": torch.full((64,), value)},
            "epoch": 0,
            "global_step": 1,
            "optimizer_states": [],
            "loops": {},
        },
        path,
    )


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    last, prev = tmp_path / "last.ckpt", tmp_path / "last.ckpt.prev"
    _save(prev, 1.0)
    _save(last, 2.0)
    assert resumable(last) == last
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed mid-copy
    assert not whole(last) and whole(prev)
    assert resumable(last) == prev
    assert "damaged" in caplog.text and str(prev) in caplog.text
    prev.write_bytes(b"junk")
    assert resumable(last) is None


def _junk_zip(path):
    with zipfile.ZipFile(path, "w") as archive:  # whole, CRCs and all, but no checkpoint in it
        archive.writestr("last/data.pkl", b"junk")


# whole zips that are no run's checkpoint: junk inside, a tensor, a weights-only save
NOT_OURS = {
    "a zip of junk": _junk_zip,
    "a tensor": lambda path: torch.save(torch.zeros(3), path),
    "weights only": lambda path: torch.save({"state_dict": {"w": torch.zeros(3)}}, path),
}


@pytest.mark.parametrize("kind", NOT_OURS)
def test_a_whole_last_checkpoint_that_is_not_ours_falls_back_to_the_previous_one(kind, tmp_path, caplog):
    last, prev = tmp_path / "last.ckpt", tmp_path / "last.ckpt.prev"
    _save(prev, 1.0)
    NOT_OURS[kind](last)
    assert whole(last)  # what was checked before: this file passed, and resuming it failed
    assert resumable(last) == prev
    assert "damaged" in caplog.text and str(prev) in caplog.text


def test_a_damaged_optuna_database_is_one_line_naming_it(config, tmp_path, capsys):
    db = tmp_path / "run" / "optuna.db"
    db.parent.mkdir()
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # header intact, pages garbage
    with pytest.raises(ConfigError, match="optuna.db.*ranked.csv"):
        check_storage(db)
    with pytest.raises(SystemExit):
        search_cli.run(config("search", *TINY, "strategy=evolution"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optuna.db" in err[0], err


def test_a_whole_optuna_database_passes(tmp_path):
    import sqlite3

    with sqlite3.connect(tmp_path / "optuna.db") as db:
        db.execute("create table t (x)")
    check_storage(tmp_path / "optuna.db")
