"""No code runs from a checkpoint: a crafted pickle, shaped like each checkpoint kind, fed to
every loading path, never creates its marker file; bad files are one ConfigError line.
(The threat: https://pytorch.org/docs/stable/generated/torch.load.html, weights_only.)"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas import pipeline
from nas.errors import ConfigError
from nas.export import _read_checkpoint, export, load
from nas.safe_load import read_checkpoint
from nas.training.retrain import RetrainModule
from nas.training.run import fit_supernet
from nas.training.search import load_supernet
from tests.test_export import make_checkpoint

NAS = Path(__file__).resolve().parents[1] / "nas"


class Payload:
    """Unpickling this would run os.system and create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path: Path, marker: Path, kind: str) -> Path:
    """A checkpoint of `kind` (search / retrain) with the payload inside."""
    evil = Payload(marker)
    if kind == "search":
        data = {"state_dict": {"supernet.x": torch.zeros(1)}, "supernet": {"space": evil}, "rng": evil}
    else:
        data = {"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": {"arch": evil, "task_config": evil}}
    torch.save(data, path)
    return path


def loaders(tmp_path: Path) -> dict:
    """Every path by which a user-supplied checkpoint is read."""
    return {
        "search resume (nas-search resume=)": lambda f: fit_supernet(None, None, None, "acc", None, ckpt_path=str(f)),
        "retrain init=inherit / distillation teacher (retrain.supernet_ckpt=)": load_supernet,
        "nas-export ckpt= (task_of)": lambda f: pipeline.task_of(f, tmp_path),
        "nas-export ckpt= (export)": lambda f: export(f, tmp_path / "out"),
        "retrain checkpoint (RetrainModule.load_model)": lambda f: RetrainModule.load_model(str(f)),
        "retrain resume (read before Lightning)": read_checkpoint,
    }


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_crafted_pickle_never_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = crafted(tmp_path / f"{kind}.ckpt", marker, kind)
    with pytest.raises(Exception):  # the payload is live: loading it unsafely creates the marker
        torch.load(evil, weights_only=True)
    for name, loader in loaders(tmp_path).items():
        with pytest.raises(ConfigError) as err:
            loader(evil)
        assert "\n" not in str(err.value) and str(evil) in str(err.value), name
        assert not marker.exists(), name


def test_the_payload_does_run_when_loaded_unsafely(tmp_path):
    """The test above can fail: the same file, loaded the unsafe way, creates the marker."""
    marker = tmp_path / "pwned"
    evil = crafted(tmp_path / "e.ckpt", marker, "retrain")
    torch.load(evil, weights_only=False)  # the one place this is allowed: proving the payload live
    assert marker.exists()


def test_export_load_reads_only_safetensors(tmp_path):
    """A weights.pt (e.g. a crafted one from an old export) is never read by nas.export.load."""
    marker = tmp_path / "pwned"
    for name in ("arch.yaml", "space.yaml", "model.json"):
        (tmp_path / name).write_text("{}")
    crafted(tmp_path / "weights.pt", marker, "retrain")
    with pytest.raises(ConfigError, match="no weights.safetensors"):
        load(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "the file is empty"), (b"garbage, not a checkpoint", "cannot be read as a torch checkpoint")],
)
def test_empty_and_garbage_files_are_one_line(tmp_path, content, reason):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    for name, loader in loaders(tmp_path).items():
        with pytest.raises(ConfigError, match=re.escape(reason)) as err:
            loader(bad)
        assert "\n" not in str(err.value) and str(bad) in str(err.value), name


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> bytes:
    path = make_checkpoint(
        tmp_path_factory.mktemp("real") / "r.ckpt", [{"attention": "full", "heads": 2, "ffn_dim": 128}]
    )
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bytes_and_truncations_are_only_config_errors(tmp_path, real_checkpoint, data):
    content = data.draw(
        st.one_of(st.binary(max_size=512), st.integers(0, len(real_checkpoint) - 1).map(lambda n: real_checkpoint[:n]))
    )
    bad = tmp_path / "fuzz.ckpt"
    bad.write_bytes(content)
    for loader in (read_checkpoint, load_supernet, _read_checkpoint):
        with pytest.raises(ConfigError) as err:
            loader(bad)
        assert "\n" not in str(err.value)


def test_no_unsafe_load_in_the_package():
    """Every torch.load in nas/ passes weights_only=True, and every Lightning call given a
    ckpt_path loads it with weights_only=True too."""
    for file in NAS.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if (
                name == "torch.load"
                or (name.endswith((".fit", ".test", ".validate")) and "ckpt_path" in kwargs)
                or name.endswith("load_from_checkpoint")
            ):
                assert kwargs.get("weights_only") == "True", f"{file.name}:{node.lineno}: {ast.unparse(node)}"
