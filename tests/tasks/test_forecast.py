"""The forecast task: ETT's CSV read unchanged, Time-Series-Library's borders, train statistics,
the generated series and its noise floor, the linear and last-value baselines, mse/mae and their
direction."""

import datetime

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.metrics import HIGHER_IS_BETTER, evaluate_each, scored, task_loss, task_metric
from nas.ranking import rank_summary, regret
from nas.results import Candidate, best_first, pareto_front
from nas.space import Arch, LayerArch
from nas.tasks import build
from nas.tasks.forecast import (
    ForecastConfig,
    Windows,
    fit_linear,
    forecast_scores,
    generate,
    last_value,
    linear_forecast,
    split_borders,
    window_starts,
    write_csv,
)

ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]  # ETTh1.csv's header after `date`
HOUR, QUARTER = datetime.timedelta(hours=1), datetime.timedelta(minutes=15)


def ett_file(path, rows, seed=0, interval=HOUR):
    """An ETT-format CSV of `rows` rows of random walks, as ETTh1.csv is laid out."""
    # 3 decimals, under 1000: written with 6 significant digits, read back exactly
    values = np.round(np.cumsum(np.random.default_rng(seed).normal(0, 0.1, (rows, 7)), axis=0) + 10, 3)
    write_csv(path, values, ETT_COLUMNS, interval)
    return values


def test_ett_borders_are_time_series_librarys():
    # Dataset_ETT_hour: border1s = [0, 12*30*24 - L, 12*30*24 + 4*30*24 - L], border2s = [12, 16, 20 months]
    assert split_borders(17_420, HOUR, 336) == [(0, 8640), (8640 - 336, 11_520), (11_520 - 336, 14_400)]
    # Dataset_ETT_minute: the same months of quarter-hours
    assert split_borders(69_680, QUARTER, 96) == [(0, 34_560), (34_560 - 96, 46_080), (46_080 - 96, 57_600)]
    # shorter than 20 months: the same 12/4/4 proportions of its rows
    assert split_borders(1000, HOUR, 24) == [(0, 600), (576, 800), (776, 1000)]
    # Time-Series-Library's __len__: len(data) - seq_len - pred_len + 1 windows
    assert len(window_starts(0, 8640, 336, 96)) == 8640 - 336 - 96 + 1
    assert list(window_starts(10, 30, 4, 2, step=5)) == [10, 15, 20]


def test_reads_an_ett_csv_unchanged_with_the_borders_and_train_statistics(tmp_path):
    path = tmp_path / "ETTh1.csv"
    raw = ett_file(path, 14_400 + 50)  # 20 months and a few rows that the split does not use
    task = build("forecast", data_dir=tmp_path, path=str(path), lookback=48, horizon=24, batch_size=8)
    assert task.columns == ETT_COLUMNS and task.shape.channels == 7 and task.shape.max_len == 48
    task.setup()
    mean, std = raw[:8640].mean(0), raw[:8640].std(0)  # sklearn's StandardScaler on the train rows
    np.testing.assert_allclose(task.mean, mean)
    np.testing.assert_allclose(task.std, std)
    standard = ((raw - mean) / std).astype(np.float32)
    train, val, test = (task.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (8640 - 72 + 1, 2880 - 24 + 1, 2880 - 24 + 1)
    x, y = val[0]  # val's first window reads its lookback from the rows before the val months
    np.testing.assert_array_equal(x, standard[8640 - 48 : 8640])
    np.testing.assert_array_equal(y, standard[8640 : 8640 + 24])
    x, y = test[len(test) - 1]  # test's last window ends at month 20
    np.testing.assert_array_equal(y, standard[14_400 - 24 : 14_400])
    batch = next(iter(task.train_dataloader()))
    assert batch["tokens"].shape == (8, 48, 7) and batch["tokens"].dtype == torch.float32
    assert batch["target"].shape == (8, 24, 7) and batch["mask"].all() and batch["mask"].shape == (8, 48)
    described = task.describe()
    assert described["columns"] == ETT_COLUMNS and described["input"] == "values"
    np.testing.assert_allclose(described["std"], std)


def test_quarter_hour_rows_split_by_the_same_months(tmp_path):
    path = tmp_path / "ETTm1.csv"
    ett_file(path, 4000, interval=QUARTER)  # shorter than 20 months: proportions of its rows
    task = build("forecast", data_dir=tmp_path, path=str(path), lookback=32, horizon=16)
    task.setup()
    assert len(task.splits["train"]) == 2400 - 48 + 1 and len(task.splits["test"]) == 800 - 16 + 1


@pytest.mark.parametrize(
    "line, message",
    [
        ("2016-07-01 05:00:00,1,2,3,4,5,6", r"expected 8 fields \(date and 7 values\), got 7"),
        ("yesterday,1,2,3,4,5,6,7", "date 'yesterday' is not a date"),
        ("2016-07-01 05:00:00,1,2,x,4,5,6,7", "column MUFL: 'x' is not a number"),
        ("2016-07-01 05:00:00,1,2,3,4,nan,6,7", "column LUFL: 'nan' is not a finite number"),
        ("2016-07-01 02:00:00,1,2,3,4,5,6,7", "date 2016-07-01 02:00:00 is not after the row before.s"),
    ],
)
def test_a_bad_row_is_one_line_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "ETTh1.csv"
    ett_file(path, 200)
    lines = path.read_text().splitlines()
    lines[6] = line  # the 7th line: the header, then rows 0..4, then this one
    path.write_text("\n".join(lines) + "\n")
    task = build("forecast", data_dir=tmp_path, path=str(path), lookback=16, horizon=8)
    with pytest.raises(ConfigError, match=f"^{path}:7: {message}") as err:
        task.setup()
    assert "\n" not in str(err.value)


def test_a_file_not_in_ett_layout_is_one_line(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("time,a,b\n1,2,3\n")
    with pytest.raises(ConfigError, match=f"^{path}:1: expected a header 'date,<column>,...'"):
        build("forecast", data_dir=tmp_path, path=str(path))
    with pytest.raises(ConfigError, match="task 'forecast': no file"):
        build("forecast", data_dir=tmp_path, path=str(tmp_path / "missing.csv"))
    short = tmp_path / "short.csv"
    ett_file(short, 100)
    with pytest.raises(ConfigError, match=r"the val split has 36 rows \(rows 44..79\), fewer than lookback \+ horizon"):
        build("forecast", data_dir=tmp_path, path=str(short), lookback=16, horizon=24).setup()
    with pytest.raises(ConfigError, match="patch_len 16 must be <= lookback 8"):
        build("forecast", data_dir=tmp_path, lookback=8)


def test_generated_series_has_its_noise_floor_as_best_mse(tmp_path):
    """A forecast that knows the seasonalities and trend exactly (the series generated without
    noise) scores the noise floor: the noise's variance after standardisation."""
    task = build("forecast", data_dir=tmp_path, lookback=48, horizon=24)
    task.setup()
    floor = task.noise_floor()
    clean, _ = generate(ForecastConfig(noise=0.0))  # the same draws, without the noise
    truth = ((clean - task.mean) / task.std).astype(np.float32)
    test = task.splits["test"]
    oracle = [np.square(test[i][1] - truth[s + 48 : s + 72]).mean() for i, s in enumerate(test.starts)]
    assert np.mean(oracle) == pytest.approx(floor, rel=0.05)
    assert 0.1 < floor < 0.3  # noise 0.3 against seasonal amplitudes of about 1
    assert build("forecast", data_dir=tmp_path, path=None, noise=0.6).noise_floor() > floor


def test_the_linear_baseline_is_the_least_squares_solution():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 3)).cumsum(0).astype(np.float32)  # (T, C)
    lookback, horizon = 8, 4
    weight, bias = fit_linear(train, lookback, horizon)
    rows = [
        (train[s : s + lookback, c], train[s + lookback : s + lookback + horizon, c])
        for c in range(3)
        for s in range(60 - lookback - horizon + 1)
    ]
    x = torch.tensor(np.array([np.append(r[0], 1.0) for r in rows]), dtype=torch.float64)  # (n, L + 1)
    y = torch.tensor(np.array([r[1] for r in rows]), dtype=torch.float64)  # (n, H)
    expected = torch.linalg.lstsq(x, y).solution.numpy()  # (L + 1, H)
    np.testing.assert_allclose(weight, expected[:lookback], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(bias, expected[lookback], rtol=1e-6, atol=1e-8)
    window = train[None, 10:18]  # (1, L, C)
    np.testing.assert_allclose(linear_forecast(window, weight, bias)[0, :, 1], train[10:18, 1] @ weight + bias)


def test_the_last_value_baseline_by_hand():
    data = np.array([[0, 7], [1, 7], [2, 7], [3, 7], [4, 7], [5, 7]], dtype=np.float32)  # (T, 2)
    windows = Windows(data, window_starts(0, 6, 2, 2), lookback=2, horizon=2)
    assert len(windows) == 3
    # channel 0 forecasts 1, 2, 3 against (2, 3), (3, 4), (4, 5): errors 1 and 2 each time;
    # channel 1 is constant: errors 0. Over 12 values: squared 3 * (1 + 4) = 15, absolute 3 * 3 = 9
    assert forecast_scores(windows, last_value) == {"mse": 15 / 12, "mae": 9 / 12}


def test_baselines_are_scored_on_val_and_test(tmp_path):
    task = build("forecast", data_dir=tmp_path)  # the protocol's lookback 336, horizon 96
    scores = task.baseline()
    for name in ("", "linear/", "last_value/"):
        assert {f"{name}{split}/{m}" for split in ("val", "test") for m in ("mse", "mae")} <= set(scores)
    floor = task.noise_floor()
    assert floor < scores["linear/test/mse"] < 1.05 * floor  # the linear map nearly reaches the floor
    assert scores["last_value/test/mse"] > 5 * floor  # the seasonality defeats the last value
    assert scores["test/mse"] > scores["linear/test/mse"]  # the train mean ignores the input
    assert task.baseline() == scores  # computed once


def test_mse_and_mae_score_a_forecast_lower_is_better():
    target = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (b=1, H=2, C=2)
    forecast = torch.tensor([[[1.5, 2.0], [1.0, 4.0]]])
    assert task_metric(forecast, target, "mse") == pytest.approx((0.25 + 4) / 4)
    assert task_metric(forecast, target, "mae") == pytest.approx((0.5 + 2) / 4)
    assert task_loss(forecast, target) == pytest.approx(F.mse_loss(forecast, target).item())
    assert scored(target) == 4
    assert HIGHER_IS_BETTER["mse"] is False and HIGHER_IS_BETTER["mae"] is False
    with pytest.raises(ConfigError, match="metric 'acc' does not score a forecast"):
        task_metric(forecast, target, "acc")
    with pytest.raises(ConfigError, match="metric 'mse' does not score classes"):
        task_metric(torch.zeros(2, 3), torch.tensor([0, 1]), "mse")


def test_evaluation_weights_batches_by_their_values():
    """Batches of different sizes average to the MSE over every value, as the baselines count."""

    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, values, mask):
            return torch.zeros(values.shape[0], 2, 1)

    batches = [
        {"tokens": torch.zeros(n, 4, 1), "mask": torch.ones(n, 4, dtype=torch.bool), "target": torch.full((n, 2, 1), v)}
        for n, v in ((3, 1.0), (1, 3.0))
    ]
    scores = evaluate_each({"zero": Zero()}, batches, ("mse", "mae"))["zero"]
    assert scores == pytest.approx({"mse": (3 * 2 * 1 + 2 * 9) / 8, "mae": (3 * 2 * 1 + 2 * 3) / 8})


def test_the_direction_reaches_the_orders_fronts_and_regret():
    archs = [Arch(1, (LayerArch("full", h, 16),)) for h in (1, 2, 4)]
    candidates = [Candidate(a, {"val/mse": m, "cost/params": c}) for a, m, c in zip(archs, (0.3, 0.1, 0.2), (1, 3, 2))]
    assert [c.metrics["val/mse"] for c in best_first(candidates, "mse")] == [0.1, 0.2, 0.3]
    front = pareto_front(candidates, "val/mse", "cost/params", HIGHER_IS_BETTER["mse"])
    assert [c.metrics["val/mse"] for c in front] == [0.3, 0.2, 0.1]  # cheapest first, each one better
    assert regret([0.3, 0.1, 0.2], 0.2, higher_is_better=False) == pytest.approx(0.1)
    summary = rank_summary([0.31, 0.12, 0.2], [0.3, 0.1, 0.2], higher_is_better=False)
    assert summary.pick == 1 and summary.regret == 0 and summary.kendall_tau == pytest.approx(1.0)
