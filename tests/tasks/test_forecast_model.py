"""The forecaster: PatchTST's patch embedding against a direct reference, channel independence
and the window scaling (RevIN), weight sharing and its cost, training to the noise floor, and
the export folder's program and predict.py on a CSV window."""

import csv
import io
import json
import random
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from nas import cost, pipeline, rank_pipeline
from nas.errors import ConfigError
from nas.export import export, load
from nas.metrics import evaluate, evaluate_each
from nas.model import ModelShape, ModelSpec, Subnet, ValueEmbedding
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import SHARING, Supernet
from nas.tasks import build
from nas.tasks.forecast import write_csv
from nas.training.retrain import RetrainModule
from tests.helpers import compose_config, load_space, module_from_file

SHAPE = ModelShape(1, 12, 40, "forecast", input="values", channels=3, patch_len=8, patch_stride=4)


def values(batch=4, steps=40, channels=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, channels, generator=g) * 2 + 5  # (b, L, C)


def test_shape_declares_values_and_old_shapes_read_back_as_token_ids():
    assert SHAPE.positions() == (40 - 8) // 4 + 2 == 10 and SHAPE.sequences == 3
    assert ModelShape.from_dict(SHAPE.to_dict()) == SHAPE
    old = ModelShape.from_dict({"vocab_size": 30, "num_classes": 4, "max_len": 256, "readout": "tokens"})
    assert (old.input, old.positions(), old.sequences) == ("ids", 256, 1)
    with pytest.raises(ConfigError, match="input 'values' with readout 'classify': values go with forecast only"):
        ModelShape(1, 12, 40, "classify", input="values")
    with pytest.raises(ConfigError, match="input: unknown input 'pixels'; allowed: ids, values"):
        ModelShape(1, 12, 40, "forecast", input="pixels")
    with pytest.raises(ConfigError, match="patch_len 50 is longer than the input's 40 steps"):
        ModelShape(1, 12, 40, "forecast", input="values", patch_len=50)


def test_patch_embedding_against_a_direct_reference():
    """PatchTST's steps, written out: scale each series by its mean and (biased) deviation,
    repeat the last value stride times, cut patch_len steps every stride steps, project, add positions."""
    torch.manual_seed(0)
    embed = ValueEmbedding(16, SHAPE)
    series = values(2).transpose(1, 2).reshape(6, 40).double().numpy()  # (b*C, L)
    weight, bias = embed.patch.weight.detach().double().numpy(), embed.patch.bias.detach().double().numpy()
    positions = embed.positions.weight.detach().double().numpy()
    expected = np.zeros((6, 10, 16))
    for s, row in enumerate(series):
        scaled = (row - row.mean()) / np.sqrt(row.var() + 1e-5)
        padded = np.concatenate([scaled, np.full(4, scaled[-1])])
        for p in range(10):
            expected[s, p] = weight @ padded[4 * p : 4 * p + 8] + bias + positions[p]
    got = embed(torch.from_numpy(series).float())
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="takes windows of exactly 40 steps, got 39"):
        embed(torch.zeros(6, 39))


@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny")


def test_channels_are_independent_and_each_window_is_scaled_back(tiny):
    torch.manual_seed(0)
    model = Subnet(ModelSpec(tiny.largest(), tiny, SHAPE)).eval()
    x = values()
    with torch.no_grad():
        y = model(x)
        assert y.shape == (4, 12, 3)
        other = x.clone()
        other[:, :, 1] = torch.randn(4, 40)  # another channel 1: channels 0 and 2 forecast the same
        changed = model(other)
        torch.testing.assert_close(changed[:, :, [0, 2]], y[:, :, [0, 2]])
        assert not torch.allclose(changed[:, :, 1], y[:, :, 1])
        scale, shift = torch.tensor([3.0, 0.5, 2.0]), torch.tensor([-4.0, 10.0, 0.0])
        torch.testing.assert_close(model(x * scale + shift), y * scale + shift, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("sharing", SHARING)
def test_extracted_forecaster_equals_the_supernet_and_its_cost(tiny, sharing):
    spaces = [tiny, SearchSpace.from_dict({**tiny.to_dict(), "memory": {"reversible": True, "ffn_chunks": 2}})]
    for space in spaces:
        torch.manual_seed(0)
        net = Supernet(space, SHAPE, sharing=sharing).eval()
        if sharing == "entangled_gain":
            with torch.no_grad():
                for block in net.blocks:
                    for gain in block.attn.gains.values():
                        gain.add_(torch.randn_like(gain) * 0.3)
        x, mask = values(), torch.ones(4, 40, dtype=torch.bool)
        rng = random.Random(0)
        for arch in [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(4))]:
            subnet = net.extract(arch).eval()
            with torch.no_grad():
                torch.testing.assert_close(subnet(x, mask), net(x, arch, mask), atol=1e-5, rtol=1e-5)
            assert sum(p.numel() for p in subnet.parameters()) == cost.params(ModelSpec(arch, space, SHAPE))


def test_mixed_forward_and_costs_count_each_channel(tiny):
    net = Supernet(tiny, SHAPE)
    weights = {k: torch.full((len(v),), 1 / len(v)) for k, v in tiny.decisions().items()}
    mask = torch.ones(4, 40, dtype=torch.bool)
    assert net.forward_mixed(values(), weights, mask).shape == (4, 12, 3)
    assert net.forward_mixed(values(), weights, mask, hard=True).shape == (4, 12, 3)
    arch = tiny.largest()
    one = ModelShape(1, 12, 40, "forecast", input="values", channels=1, patch_len=8, patch_stride=4)
    assert cost.flops(ModelSpec(arch, tiny, SHAPE), 40) == 3 * cost.flops(ModelSpec(arch, tiny, one), 40)
    assert cost.params(ModelSpec(arch, tiny, SHAPE)) == cost.params(ModelSpec(arch, tiny, one))


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        **kwargs,
    )


def test_a_trained_forecaster_nears_the_noise_floor(tmp_path):
    """On the generated series (daily and weekly seasons, a trend, noise of known variance), a
    small model trained for a few epochs forecasts within 15% of the best possible MSE (measured:
    6% above it; the linear map 4%)."""
    task = build("forecast", data_dir=tmp_path, lookback=192, horizon=24, window_step=8, batch_size=32)
    space = load_space("quickstart")
    arch = Arch(1, (LayerArch("full", 2, 64),))
    pl.seed_everything(0, verbose=False)
    module = RetrainModule(ModelSpec(arch, space, task.shape), "mse", lr=3e-3, warmup_steps=20)
    quiet_trainer(max_epochs=3, limit_val_batches=0).fit(module, datamodule=task)
    floor = task.noise_floor()
    mse = evaluate(module.model, task.test_dataloader(), "mse")
    assert floor < mse < 1.15 * floor, (mse, floor)
    assert mse < task.baseline()["last_value/test/mse"] / 5


# -- export and predict.py -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A forecaster of the generated series trained for a few steps, exported with its int8 copy."""
    tmp = tmp_path_factory.mktemp("forecast")
    task = build("forecast", data_dir=tmp, lookback=48, horizon=12, window_step=16, batch_size=16, channels=3)
    space = load_space("quickstart")
    arch = Arch(2, (LayerArch("local", 2, 64), LayerArch("full", 4, 64)))
    pl.seed_everything(0, verbose=False)
    module = RetrainModule(ModelSpec(arch, space, task.shape), "mse", warmup_steps=1, task_config=task.record())
    trainer = quiet_trainer(max_steps=5, limit_val_batches=0)
    trainer.fit(module, datamodule=task)
    trainer.save_checkpoint(tmp / "retrain.ckpt")
    metrics = export(
        tmp / "retrain.ckpt",
        tmp / "export",
        quantize=True,
        eval_batches=task.test_dataloader(),
        seq_len=task.seq_len,
        task=task.describe(),
    )
    raw = task.mean + task.std * task.splits["test"].data[: 48 + 5].astype(np.float64)  # rows in raw units
    write_csv(tmp / "window.csv", raw, task.columns)
    return SimpleNamespace(task=task, model=module.model.eval(), dir=tmp / "export", metrics=metrics, raw=raw, tmp=tmp)


def forecast_of(model, task, window: np.ndarray) -> np.ndarray:
    """The model's forecast of a raw window (L, C), in raw units, as predict.py computes it."""
    x = torch.tensor((window - task.mean) / task.std, dtype=torch.float32)[None]
    with torch.no_grad():
        return model(x)[0].double().numpy() * task.std + task.mean  # (H, C)


def test_export_scores_mse_and_mae_and_loads_back(exported):
    task, model = exported.task, exported.model
    scores = evaluate_each({"model": model}, task.test_dataloader(), ("mse", "mae"))["model"]
    assert exported.metrics["test/mse"] == pytest.approx(scores["mse"])
    assert exported.metrics["test/mae"] == pytest.approx(scores["mae"])
    assert {"int8/test/mse", "int8/test/mae", "int8/delta"} <= set(exported.metrics)
    x = next(iter(task.test_dataloader()))["tokens"]
    with torch.no_grad():
        torch.testing.assert_close(load(exported.dir)(x), model(x))
    described = json.loads((exported.dir / "task.json").read_text())
    assert described["columns"] == task.columns and described["mean"] == pytest.approx(task.mean.tolist())


def test_predict_script_forecasts_a_csv_window_in_raw_units(exported):
    """As a user runs it: the last lookback rows of an ETT-format CSV in, the forecast as CSV out."""
    done = subprocess.run(
        [sys.executable, "predict.py", str(exported.tmp / "window.csv")],
        cwd=exported.dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["date", *exported.task.columns] and len(rows) == 1 + 12
    assert rows[1][0] == "2016-07-03 05:00:00"  # the window's 53 hourly rows from 2016-07-01 00:00, then the next
    expected = forecast_of(exported.model, exported.task, exported.raw[-48:])
    np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], dtype=float), expected, rtol=1e-4, atol=1e-4)


def folder_script(folder):
    return module_from_file("exported_predict", folder / "predict.py")


def test_predict_script_reads_values_without_dates_and_the_int8_copy(exported, capsys, monkeypatch):
    script = folder_script(exported.dir)
    text = ",".join(exported.task.columns) + "\n" + "\n".join(",".join(map(str, r)) for r in exported.raw) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert script.main(["-"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == exported.task.columns  # no date column in, none out
    expected = forecast_of(exported.model, exported.task, exported.raw[-48:])
    np.testing.assert_allclose(np.array(rows[1:], dtype=float), expected, rtol=1e-4, atol=1e-4)
    assert script.main(["--int8", str(exported.tmp / "window.csv")]) == 0
    int8 = np.array([r[1:] for r in list(csv.reader(io.StringIO(capsys.readouterr().out)))[1:]], dtype=float)
    assert np.abs(int8 - expected).max() < 0.5 * exported.task.std.max()  # int8 weights: close, not equal


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines[:10], "window.csv: 9 rows of values; the model reads the last 48"),
        (lambda lines: ["date,a,b,c", *lines[1:]], "window.csv:1: the header must name the columns x0,x1,x2"),
        (lambda lines: [*lines[:5], "x" + lines[5][1:], *lines[6:]], "window.csv:6: date 'x016-07-01 04:00:00'"),
        (lambda lines: [*lines[:5], lines[5] + ",1", *lines[6:]], "window.csv:6: expected 4 fields, got 5"),
        (lambda lines: [*lines[:5], lines[5].rsplit(",", 1)[0] + ",inf", *lines[6:]], "window.csv:6: column x2"),
    ],
)
def test_predict_script_bad_window_is_one_line(exported, capsys, tmp_path, edit, message):
    lines = (exported.tmp / "window.csv").read_text().splitlines()
    (tmp_path / "window.csv").write_text("\n".join(edit(lines)) + "\n")
    assert folder_script(exported.dir).main([str(tmp_path / "window.csv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("predict.py: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_predict_script_refuses_other_arguments_in_one_line(exported, capsys):
    script = folder_script(exported.dir)
    for argv in (["a.csv", "b.csv"], ["--logits", "a.csv"], [str(exported.tmp / "missing.csv")]):
        assert script.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("predict.py: ") and len(err.strip().splitlines()) == 1, err


# -- the whole recipe: nas-search (search, retrain, export) and nas-rank --------------------------
TINY_FORECAST = [
    "experiment=forecast_quick",
    "task.lookback=48",
    "task.horizon=12",
    "task.window_step=32",
    "task.channels=2",
    "task.steps=2400",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "retrain.max_epochs=1",
    "search.eval_batches=2",
    "~logger",
]


def test_search_retrain_export_and_rank_a_forecaster(tmp_path):
    """Every stage on a tiny series (about 7 s of CPU): the summary lists the model's MSE and MAE
    beside the baselines', and nas-rank orders by the lower MSE."""
    run_dir = tmp_path / "run"
    cfg = compose_config("search", run_dir, TINY_FORECAST)
    outcome = pipeline.run(cfg, run_dir)
    metrics = outcome.metrics
    for key in ("retrain/test/mse", "retrain/test/mae", "baseline/linear/test/mse", "baseline/last_value/test/mae"):
        assert key in metrics and key in outcome.summary
    assert outcome.export.metrics["test/mse"] == pytest.approx(metrics["retrain/test/mse"])
    assert (run_dir / "export" / "predict.py").is_file()
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    rank = compose_config(
        "rank",
        tmp_path / "rank_cmd",
        [f"run={run_dir}", "archs=3", "budget.max_epochs=1", "budget.warmup_steps=2", "jobs.executor=debug"],
    )
    ranked = rank_pipeline.rank(rank)
    summary = json.loads((ranked.dir / "summary.json").read_text())
    assert summary["higher_is_better"] is False and summary["metric"] == "mse"
    assert summary["regret"] >= 0
