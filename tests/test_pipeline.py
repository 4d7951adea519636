"""nas.pipeline on tiny settings: each stage returns its dataclass, the chosen arch is scored
once, and the import layers run one way (cli -> {pipeline, rank_pipeline} -> training -> strategies -> ...)."""

import ast
from pathlib import Path

import pytest
import yaml

from nas import pipeline
from nas.space import Arch
from tests.helpers import TINY, compose_config

NAS = Path(pipeline.__file__).parent


@pytest.fixture
def counted(monkeypatch):
    """How often the pipeline itself evaluates an arch (strategies evaluate on their own)."""
    calls = []
    real = pipeline.evaluate

    def evaluate(*args, **kwargs):
        calls.append(kwargs.get("arch"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate", evaluate)
    return calls


def test_search_returns_its_outcome_and_scores_the_arch_once(tmp_path, counted):
    cfg = compose_config("search", tmp_path / "run", [*TINY, "retrain.enabled=false", "~logger"])
    outcome = pipeline.search(cfg, tmp_path / "run")
    assert isinstance(outcome, pipeline.SearchOutcome)
    assert outcome.arch == outcome.result.best == Arch.from_yaml(tmp_path / "run" / "best_arch.yaml")
    assert outcome.supernet_ckpt.is_file()
    assert counted == [outcome.arch]  # GDAS ranks nothing: the pipeline scores its choice, once
    assert set(outcome.metrics) == {"search/val/acc", "cost/params", "cost/flops", "cost/activation_mib"}


def test_margins_go_to_a_sidecar_and_a_small_one_warns(tmp_path, caplog):
    cfg = compose_config(
        "search", tmp_path / "run", [*TINY, "retrain.enabled=false", "~logger", "strategy.decide.min_margin=1.0"]
    )  # the smallest margin is below
    outcome = pipeline.search(cfg, tmp_path / "run")
    written = yaml.safe_load((tmp_path / "run" / "margins.yaml").read_text())
    assert written.pop("decide") == outcome.comparison  # strategy.decide.rule=greedy, the default
    assert written.pop("evidence") == [s.to_dict() for s in outcome.evidence]  # one paired test per decision
    assert {s.decision for s in outcome.evidence} == set(outcome.comparison)
    assert written.pop("confidence") == outcome.confidence and outcome.confidence.startswith("confidence: ")
    assert written == {k: round(v, 4) for k, v in outcome.margins.items()} and written
    assert sum("the search did not decide" in r.getMessage() for r in caplog.records) == 1


def test_shrinking_and_the_final_comparison_go_to_the_sidecar_and_the_summary(tmp_path):
    cfg = compose_config(
        "search",
        tmp_path / "run",
        [
            *TINY,
            "retrain.enabled=false",
            "~logger",
            "strategy=darts",
            "strategy.shrink.every=1",
            "strategy.decide.rule=top2",
        ],
    )
    outcome = pipeline.search(cfg, tmp_path / "run")
    written = yaml.safe_load((tmp_path / "run" / "margins.yaml").read_text())
    drops = written.pop("shrink")  # one epoch: every decision with a choice to spare dropped one
    assert {e["decision"] for e in drops} == {k for k, v in outcome.space.decisions().items() if len(v) > 1}
    assert written.pop("decide") == outcome.comparison and outcome.comparison
    assert written.pop("evidence") == [s.to_dict() for s in outcome.evidence] and written.pop("confidence")
    assert written == {k: round(v, 4) for k, v in outcome.margins.items()}
    for c in outcome.comparison.values():
        assert c["kept"] in [t["choice"] for t in c["tried"]] and len(c["tried"]) == 2
        assert all(set(t) == {"choice", "val/acc", "val/loss"} for t in c["tried"])
    text = pipeline.summary(
        outcome.arch, outcome.metrics, {}, outcome.margins, outcome.comparison, outcome.evidence, outcome.confidence
    )
    key, c = next(iter(outcome.comparison.items()))
    assert f"  {key}: {c['tried'][0]['choice']} val/acc " in text and f" -> {c['kept']}" in text
    for s in outcome.evidence:  # top2: the kept choice against the other one
        compared = outcome.comparison[s.decision]
        assert {s.winner, s.runner_up} == {str(t["choice"]) for t in compared["tried"]}
        assert s.winner == str(compared["kept"])
        assert f"  {s.describe()}\n" in text
    assert text.count(outcome.confidence) == 1


def test_a_ranked_choice_is_not_scored_again(tmp_path, counted):
    cfg = compose_config(
        "search", tmp_path / "run", [*TINY, "retrain.enabled=false", "~logger", "strategy=random", "strategy.samples=3"]
    )
    outcome = pipeline.search(cfg, tmp_path / "run")
    assert counted == []
    assert outcome.metrics["search/val/acc"] == outcome.result.ranked[0].metrics["val/acc"]


def test_run_retrains_and_exports_the_searched_arch(tmp_path):
    cfg = compose_config("search", tmp_path / "run", [*TINY, "retrain.max_epochs=1", "~logger"])
    outcome = pipeline.run(cfg, tmp_path / "run")
    assert isinstance(outcome.retrain, pipeline.RetrainOutcome) and isinstance(outcome.export, pipeline.ExportOutcome)
    assert outcome.retrain.arch == outcome.search.arch
    assert Arch.from_yaml(outcome.export.dir / "arch.yaml") == outcome.search.arch
    assert outcome.metrics["retrain/test/acc"] == pytest.approx(outcome.export.metrics["test/acc"], abs=1e-6)
    assert (tmp_path / "run" / "summary.txt").read_text() == outcome.summary + "\n"


# Each package or module's layer; a module may import only from its own layer or lower ones.
LAYERS = {
    "predict": 0,
    "cli": 6,
    "pipeline": 5,
    "rank_pipeline": 5,
    "decide_again": 5,
    "export": 4,
    "training": 4,
    "run_folder": 4,
    "viz": 3,
    "strategies": 3,
    "jobs": 3,
    "supernet": 2,
    "cost": 2,
    "metrics": 2,
    "results": 2,
    "evidence": 2,
    "ranking": 2,
    "proxies": 2,
    "tasks": 2,
    "model": 1,
    "space": 0,
    "ops": 0,
    "errors": 0,
    "registry": 0,
    "safe_load": 0,
    "atomic": 0,
    "peak_memory": 0,
    "cpu_allocator": 0,
    "hydra_configs": 4,
}


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_imports_run_one_way():
    wrong = []
    for path in NAS.rglob("*.py"):
        name = ".".join(("nas", *path.relative_to(NAS).with_suffix("").parts)).removesuffix(".__init__")
        if name == "nas":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for target in targets:
                if target.startswith("nas.") and layer_of(target) > layer_of(name):
                    wrong.append(f"{name} imports {target}")
                if name.startswith("nas.cli.") and target.startswith("nas.cli.") and target != "nas.cli.common":
                    wrong.append(f"{name} imports another command, {target}")
    assert not wrong, "\n".join(wrong)
