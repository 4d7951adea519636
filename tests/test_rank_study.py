"""scripts/studies/rank_study.py: every row of the study is a valid `nas-search` configuration,
its totals count each standalone job once, and an ensemble row names its runs as one list."""

import argparse
import json
from pathlib import Path

import pytest

from tests.cli.conftest import compose_config
from tests.helpers import module_from_file

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "studies" / "rank_study.py"


@pytest.fixture(scope="module")
def rank_study():
    return module_from_file("rank_study", SCRIPT)


@pytest.mark.parametrize("experiment", ["quickstart", "recall_1k", "listops_128", "hybrid_lm_quick"])
def test_every_mechanism_composes_with_every_experiment(rank_study, experiment, tmp_path):
    """A renamed or misspelt option would stop a study hours in: Hydra refuses unknown keys."""
    assert set(rank_study.EXPERIMENTS) == {"quickstart", "recall_1k", "listops_128", "hybrid_lm_quick"}
    for name, overrides in rank_study.MECHANISMS.items():
        cfg = compose_config("search", tmp_path / name, [f"experiment={experiment}", *overrides])
        assert cfg.strategy.name == next(o.split("=")[1] for o in overrides if o.startswith("strategy="))
        assert (cfg.sharing == "separate") == ("separate" in name)
        assert any(o.startswith("sharing=") for o in overrides), f"{name}: a new CLI default would change the row"
        if cfg.strategy.name in ("darts", "gdas"):
            assert any(o.startswith("strategy.decide.rule=") for o in overrides), f"{name}: names how it decides"
        assert cfg.space.file.endswith(f"/{rank_study.preset(experiment)['space']}.yaml")


def test_default_rows_are_the_path_sampling_ones(rank_study):
    assert "fair_separate" in rank_study.SAMPLING
    differentiable = {
        "gdas",
        "darts_pc4",
        "gdas_separate",
        "darts_pc4_separate",
        "gdas_separate_compare",
        "gdas_separate_greedy",
        "darts_pc4_separate_greedy",
    }
    assert not differentiable & set(rank_study.SAMPLING)


def test_the_study_counts_each_standalone_job_once(rank_study, tmp_path):
    rows = [{"standalone_train_seconds": {"a": 10.0, "b": 20.0}}, {"standalone_train_seconds": {"b": 20.0, "c": 5.0}}]
    assert rank_study.standalone_jobs(rows, tmp_path, epochs=16, seeds=[0]) == {"a": 10.0, "b": 20.0, "c": 5.0}
    # rows recorded before nas-rank named its jobs: the results in the folder of this budget and these seeds
    for job, epochs, seed in (("a", 16, 0), ("d", 8, 0), ("e", 16, 1)):
        result = {"budget": {"max_epochs": epochs}, "seed": seed, "train_seconds": 1.5}
        (tmp_path / f"{job}.json").write_text(json.dumps(result))
    assert rank_study.standalone_jobs([{}, *rows], tmp_path, epochs=16, seeds=[0]) == {"a": 1.5}


def test_an_ensemble_row_ranks_every_search_seed_of_a_mechanism_at_once(rank_study, tmp_path, monkeypatch):
    commands = []
    runs = [tmp_path / "search" / f"fair_seed{seed}" for seed in (0, 1)]
    summary = {field: 0.5 for field in rank_study.SUMMARY_FIELDS}
    summary["predictors"] = {name: {"kendall_tau": 0.5} for name in ("ensemble", "run0", "run1", "params")}

    def nas_rank(cmd, log, threads):  # what the study reads back: the ensemble's summary.json
        commands.append(cmd)
        (runs[0] / "rank" / "ensemble").mkdir(parents=True, exist_ok=True)
        (runs[0] / "rank" / "ensemble" / "summary.json").write_text(json.dumps(summary))
        return 2.0, 1.5

    monkeypatch.setattr(rank_study, "run", nas_rank)
    (tmp_path / "rows").mkdir()
    args = argparse.Namespace(
        search_seeds=[0, 1],
        seeds=[0],
        standalone_dir=tmp_path / "standalone",
        standalone_epochs=8,
        standalone_lr=3e-3,
        data_dir="data_cache",
        calibrate_steps=0,
        calibrate_lr=1e-3,
        workers=None,
        threads=1,
    )
    row = rank_study.ensemble(tmp_path, tmp_path / "archs.yaml", "fair", {"archs": 16}, args)
    assert row["runs"] == [str(r) for r in runs] and row["predictors"] == summary["predictors"]
    # the override names both runs as one list, as Hydra reads it
    override = next(arg for arg in commands[0] if arg.startswith("run="))
    assert list(compose_config("rank", tmp_path / "cmd", [override]).run) == [str(r) for r in runs]
    assert rank_study.ensemble(tmp_path, tmp_path / "archs.yaml", "fair", {"archs": 16}, args) == row
    assert len(commands) == 1  # recorded: reused
    rank_study.ensemble(tmp_path, tmp_path / "archs.yaml", "fair", {"archs": 32}, args)
    assert len(commands) == 2  # another setting: ranked again
