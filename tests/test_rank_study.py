"""scripts/studies/rank_study.py: every row of the study is a valid `nas-search` configuration,
and its totals count each standalone job once."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.cli.conftest import compose_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "studies" / "rank_study.py"


@pytest.fixture(scope="module")
def rank_study():
    spec = importlib.util.spec_from_file_location("rank_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("experiment", ["quickstart", "recall_1k", "listops_128"])
def test_every_mechanism_composes_with_every_experiment(rank_study, experiment, tmp_path):
    """A renamed or misspelt option would stop a study hours in: Hydra refuses unknown keys."""
    assert set(rank_study.EXPERIMENTS) == {"quickstart", "recall_1k", "listops_128"}
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
