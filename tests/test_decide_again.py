"""`nas-decide` (nas.decide_again): a finished GDAS search decided again with another rule, from
its own checkpoint, without training."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nas.cli import decide as decide_cli
from nas.decide_again import decide_again
from nas.errors import ConfigError
from nas.space import Arch
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def argmax_run(tmp_path_factory):
    """A tiny GDAS search that took the argmax of its weights."""
    root = tmp_path_factory.mktemp("decide")
    run = root / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.cli.search",
            *TINY,
            "retrain.enabled=false",
            "strategy=gdas",
            "strategy.decide.rule=argmax",
            f"paths.data_dir={root / 'data'}",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return run


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def test_the_same_weights_decided_greedily(argmax_run, tmp_path, capsys):
    run = tmp_path / "run"  # nas-decide's default folder is beside the run: <run>_<rule>
    shutil.copytree(argmax_run, run)
    decide_cli.main([f"run={run}", "strategy.decide.rule=greedy"])
    printed = json.loads(capsys.readouterr().out)
    out = tmp_path / "run_greedy"
    sidecar = yaml.safe_load((out / "margins.yaml").read_text())
    assert printed == {
        "run": str(run),
        "out": str(out),
        "decide": "greedy",
        "arch": yaml.safe_load((out / "best_arch.yaml").read_text()),
        "evidence": sidecar["evidence"],
        "confidence": sidecar["confidence"],
    }
    before_sidecar = yaml.safe_load((argmax_run / "margins.yaml").read_text())
    assert "decide" not in before_sidecar and "evidence" not in before_sidecar  # argmax compares nothing
    assert before_sidecar.pop("confidence").startswith("confidence: no decision was compared")
    decided = sidecar.pop("decide")  # the candidates the supernet compared, each tested
    assert [e["decision"] for e in sidecar.pop("evidence")] == list(decided)
    assert sidecar.pop("confidence").startswith("confidence: ")
    assert sidecar == before_sidecar  # the same weights' margins
    before, after = weights(argmax_run), weights(out)
    assert before.keys() == after.keys()  # not trained: the same weights, the same architecture distribution
    assert all(torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k] for k, v in before.items())
    Arch.from_yaml(out / "best_arch.yaml")
    summary = (out / "summary.txt").read_text()
    assert "candidates compared on the validation batches" in summary and "(paired test):" in summary
    assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["strategy"]["decide"]["rule"] == "greedy"


def test_bad_folders_are_refused_in_one_line(argmax_run, tmp_path):
    with pytest.raises(ConfigError, match="exists; name a new folder"):
        decide_again(argmax_run, "top2", argmax_run)
    with pytest.raises(ConfigError, match="not a search run folder"):
        decide_again(tmp_path, "top2", tmp_path / "out")

    def copy(name, status="done", checkpoint=None, strategy="gdas", overrides=()):
        """The run with one thing changed: status, checkpoint, strategy (a random search's config
        has no `decide`) or its saved overrides."""
        run = tmp_path / name
        shutil.copytree(argmax_run / ".hydra", run / ".hydra")
        shutil.copytree(argmax_run / "checkpoints", run / "checkpoints")
        (run / "status.json").write_text(json.dumps({"state": status}))
        if checkpoint is not None:
            (run / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        if strategy != "gdas":
            config["strategy"] = {"name": strategy}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*saved, *overrides]))
        return run

    with pytest.raises(ConfigError, match=r"strategy='random'; only the differentiable strategies \(darts, gdas\)"):
        decide_again(copy("random", strategy="random"), "top2", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"has not finished \(status.json: running\)"):  # it would train on
        decide_again(copy("running", status="running"), "top2", tmp_path / "out")
    with pytest.raises(ConfigError, match="last.ckpt is damaged"):  # nas-search would start over
        decide_again(copy("damaged", checkpoint=b"not a checkpoint"), "top2", tmp_path / "out")
    # nas-search itself refuses: one line, and no folder left to block the same command again
    with pytest.raises(ConfigError, match="nas-search failed .*search.lr"):
        decide_again(copy("bad_lr", overrides=["search.lr=-1"]), "top2", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the saved overrides become command-line overrides: none may name code, the logger or Hydra
    marker = tmp_path / "pwned"
    evil = f"{{_target_: pathlib.Path.write_text, _args_: [{{_target_: pathlib.Path, _args_: [{marker}]}}, x]}}"
    for i, override in enumerate(
        [f"+logger.extra={evil}", f"+task.seed={evil}", "hydra.callbacks.x=1", "+hydra.job.env_set.X=1"]
    ):
        with pytest.raises(ConfigError, match="is not accepted from a file"):
            decide_again(copy(f"evil{i}", overrides=[override]), "top2", tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["strategy.decide.rule=top2"], "missing value for 'run': pass run=..."),
        (["run={tmp}"], "missing value for 'strategy.decide.rule'"),
        (["run={tmp}", "strategy.decide.rule=best"], "strategy.decide.rule=best: allowed: greedy, top2, argmax"),
        (["run={tmp}", "strategy.decide.rule=top2"], "run={tmp}: not a search run folder"),
        (["run={tmp}", "top2"], "'top2': arguments are key=value"),
        (["--run", "{tmp}"], "unrecognized arguments: --run"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        decide_cli.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1
    assert err.startswith("nas-decide: error: ") and message.format(tmp=tmp_path) in err
