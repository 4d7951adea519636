"""scripts/decide_again.py: a finished GDAS search decided again with another rule, from its own
checkpoint, without training."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nas.space import Arch

from .cli.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "decide_again.py"


@pytest.fixture(scope="module")
def decide_again():
    spec = importlib.util.spec_from_file_location("decide_again", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.decide_again


@pytest.fixture(scope="module")
def argmax_run(tmp_path_factory):
    """A tiny GDAS search that took the argmax of its weights."""
    root = tmp_path_factory.mktemp("decide")
    run = root / "run"
    subprocess.run([sys.executable, "-m", "nas.cli.search", *TINY, "retrain.enabled=false", "strategy=gdas",
                    "strategy.decide=argmax", f"paths.data_dir={root / 'data'}", f"hydra.run.dir={run}"],
                   cwd=ROOT, check=True, capture_output=True)
    return run


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def test_the_same_weights_decided_greedily(decide_again, argmax_run, tmp_path):
    out = decide_again(argmax_run, tmp_path / "greedy", "greedy")
    assert "decide" not in yaml.safe_load((argmax_run / "margins.yaml").read_text())
    sidecar = yaml.safe_load((out / "margins.yaml").read_text())
    assert sidecar.pop("decide")  # the candidates the supernet compared
    assert sidecar == yaml.safe_load((argmax_run / "margins.yaml").read_text())  # the same weights' margins
    before, after = weights(argmax_run), weights(out)
    assert before.keys() == after.keys()  # not trained: the same weights, the same architecture distribution
    assert all(torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k] for k, v in before.items())
    Arch.from_yaml(out / "best_arch.yaml")
    assert "candidates compared on the validation batches" in (out / "summary.txt").read_text()
    assert yaml.safe_load((out / ".hydra" / "config.yaml").read_text())["strategy"]["decide"] == "greedy"


def test_bad_folders_are_refused_in_one_line(decide_again, argmax_run, tmp_path):
    with pytest.raises(SystemExit, match="exists; name a new folder"):
        decide_again(argmax_run, argmax_run, "top2")
    with pytest.raises(SystemExit, match="is not a search run folder"):
        decide_again(tmp_path, tmp_path / "out", "top2")

    def copy(name, status="done", checkpoint=None, strategy="gdas", overrides=()):
        run = tmp_path / name
        shutil.copytree(argmax_run / ".hydra", run / ".hydra")
        shutil.copytree(argmax_run / "checkpoints", run / "checkpoints")
        (run / "status.json").write_text(json.dumps({"state": status}))
        if checkpoint is not None:
            (run / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        config["strategy"]["name"] = strategy
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*saved, *overrides]))
        return run

    with pytest.raises(SystemExit, match="strategy=random; only darts and gdas"):
        decide_again(copy("random", strategy="random"), tmp_path / "out", "top2")
    with pytest.raises(SystemExit, match=r"has not finished \(status.json: running\)"):  # it would train on
        decide_again(copy("running", status="running"), tmp_path / "out", "top2")
    with pytest.raises(SystemExit, match="last.ckpt is damaged"):  # nas-search would start over
        decide_again(copy("damaged", checkpoint=b"not a checkpoint"), tmp_path / "out", "top2")
    # nas-search itself refuses: one line, and no folder left to block the same command again
    with pytest.raises(SystemExit, match="nas-search failed .*search.lr"):
        decide_again(copy("bad_lr", overrides=["search.lr=-1"]), tmp_path / "out", "top2")
    assert not (tmp_path / "out").exists()
