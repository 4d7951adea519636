"""nas-retrain (scratch, inherit, distill) and nas-export from the command line's configs."""

import json

import pytest
import torch
from filelock import FileLock
from omegaconf import open_dict

from nas import pipeline, run_folder
from nas.cli import export, retrain, search
from nas.metrics import IGNORE_INDEX
from nas.space import Arch
from nas.training.retrain import RetrainModule
from tests.helpers import TINY, TINY_TASK


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny search (no retraining) whose folder the tests below start from."""
    from tests.helpers import compose_config

    run_dir = tmp_path_factory.mktemp("search") / "run"
    search.run(compose_config("search", run_dir, [*TINY, "retrain.enabled=false"]))
    return run_dir


def test_retrain_inherits_and_distills(config, searched, tmp_path, capsys):
    arch_file = searched / "best_arch.yaml"
    cfg = config(
        "retrain",
        *TINY_TASK,
        f"arch={arch_file}",
        "retrain.init=inherit",
        "retrain.distill=0.5",
        "retrain.max_epochs=1",
        f"retrain.supernet_ckpt={searched / 'checkpoints' / 'last.ckpt'}",
    )
    result = retrain.run(cfg)
    assert result.ckpt.is_file()
    hparams = torch.load(result.ckpt, weights_only=True)["hyper_parameters"]
    assert Arch.from_dict(hparams["model"]["arch"]) == Arch.from_yaml(arch_file)
    # test/acc is the best checkpoint's accuracy on the task's test set, counted here apart
    module = RetrainModule.load_model(str(result.ckpt))
    task = pipeline.make_task(cfg)
    task.setup("test")
    right = total = 0
    with torch.no_grad():
        for batch in task.test_dataloader():
            scored = batch["target"] != IGNORE_INDEX
            predicted = module.eval()(batch["tokens"], batch["mask"]).argmax(-1)
            right += int((predicted == batch["target"])[scored].sum())
            total += int(scored.sum())
    assert result.metrics["retrain/test/acc"] == pytest.approx(right / total, abs=1e-6)

    # the run folder has nas-search's status and lock; resuming it when done trains nothing
    run_dir = tmp_path / "run"
    assert run_folder.read_status(run_dir)["state"] == "done" and (run_dir / "run.pid").is_file()
    with open_dict(cfg):
        cfg.resume = str(run_dir)
    before = result.ckpt.stat().st_mtime_ns
    assert retrain.run(cfg) is None
    assert "is already done" in capsys.readouterr().out
    assert result.ckpt.stat().st_mtime_ns == before


def test_checkpoint_of_another_space_is_named(config, searched, capsys):
    cfg = config(
        "retrain",
        *TINY_TASK,
        "space=tiny",
        "retrain.init=inherit",
        f"retrain.supernet_ckpt={searched / 'checkpoints' / 'last.ckpt'}",
        "arch=unused.yaml",
    )
    with open_dict(cfg):
        cfg.arch = str(searched / "tiny_arch.yaml")
    from nas.space import SearchSpace

    SearchSpace.from_yaml(cfg.space.file).smallest().to_yaml(cfg.arch)
    with pytest.raises(SystemExit):
        retrain.run(cfg)
    err = capsys.readouterr().err.strip()
    assert "checkpoint is from space 'quickstart', not 'tiny': they differ at 'name'" in err
    assert len(err.splitlines()) == 1


def test_export_refuses_an_existing_folder_then_overwrites(config, searched, tmp_path, capsys):
    cfg = config("retrain", *TINY_TASK, f"arch={searched / 'best_arch.yaml'}", "retrain.max_epochs=1")
    ckpt = retrain.run(cfg).ckpt
    out = tmp_path / "exported"
    out.mkdir()
    (out / "something").write_text("mine")
    for name in ("model.json", "weights.safetensors"):  # an earlier export: what overwrite=true may replace
        (out / name).write_text("from an earlier export")
    export_cfg = config("export", f"ckpt={ckpt}", f"out={out}", "quantize=true")
    with pytest.raises(SystemExit):
        export.run(export_cfg)
    assert "pass overwrite=true" in capsys.readouterr().err
    status = run_folder.read_status(tmp_path, ".exported")  # beside the folder: .exported.status.json
    assert status["state"] == "failed" and "overwrite" in status["error"]
    with open_dict(export_cfg):
        export_cfg.overwrite = True
    with FileLock(str(tmp_path / ".exported.lock")):  # another nas-export writing the same folder
        (tmp_path / ".exported.pid").write_text("4242\n")
        with pytest.raises(SystemExit):
            export.run(export_cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by process 4242" in err[0] and str(out) in err[0], err
    export.run(export_cfg)
    assert run_folder.read_status(tmp_path, ".exported")["state"] == "done"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "test/acc" in metrics and "int8/delta" in metrics
    assert (out / "something").read_text() == "mine"
