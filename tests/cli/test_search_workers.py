"""nas-search with the storage group: a journal file from the CLI, a bad storage stopped before
training, and two evolution workers on one PostgreSQL study (the README's recipe)."""

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import search
from tests.helpers import TINY

from ..postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)

EVOLUTION = ["strategy=evolution", "strategy.population=4", "retrain.enabled=false"]


def test_a_journal_storage_works_from_the_cli(config, tmp_path):
    search.run(config("search", *TINY, *EVOLUTION, "strategy.generations=2", "storage=journal"))
    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "run" / "optuna.journal"))
    study = optuna.load_study(study_name="evolution", storage=optuna.storages.JournalStorage(journal))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8


def test_a_bad_storage_stops_before_training(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        search.run(config("search", *TINY, *EVOLUTION, "storage.url=sqlite:/optuna.db"))
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(
        "nas-search: error: storage 'sqlite:/optuna.db' is neither a database URL "
        "nor a journal file; allowed: sqlite:///<file>, postgresql://"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()  # no supernet trained


def nas_search(run_dir, data_dir, *extra):
    command = [
        sys.executable,
        "-c",
        "from nas.cli.search import main; main()",
        f"paths.data_dir={data_dir}",
        *TINY,
        *EVOLUTION,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def best_arch(process) -> str:
    """The chosen arch of a finished nas-search, as its summary prints it."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return out.split("Best architecture\n-----------------\n")[1].split("\n\n")[0]


def test_two_cli_workers_fill_one_postgres_study(postgres_url, config, tmp_path):
    """A run trains the supernet and starts the study; two workers join it at once (README:
    `nas-search strategy=evolution resume=<run> seed=k retrain.enabled=false`) and bring it to
    exactly population * generations complete trials."""
    run_dir, data = tmp_path / "run", tmp_path / "data"
    storage = f"storage.url={postgres_url}"
    search.run(config("search", *TINY, *EVOLUTION, storage, "strategy.generations=1"))  # in this process
    workers = [
        nas_search(run_dir, data, f"resume={run_dir}", f"seed={seed}", storage, "strategy.generations=3")
        for seed in (1, 2)
    ]
    chosen = [best_arch(worker) for worker in workers]
    assert chosen[0] == chosen[1]  # both chose from the whole study
    trials = optuna.load_study(study_name="evolution", storage=postgres_url).trials
    assert [t.number for t in trials] == list(range(12))  # none lost, none duplicated or extra
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12
