"""Multivariate long-horizon forecasting in the protocol of Informer, Autoformer, PatchTST and
thuml's Time-Series-Library (https://github.com/thuml/Time-Series-Library): ETT's CSV layout and
12/4/4-month split, values standardised with the train split's statistics, a lookback of L steps
and a horizon of H (96, 192, 336 or 720), MSE and MAE on the standardised values.

Baselines fit in the same run: the linear map from the lookback to the horizon, shared by the
channels (DLinear's "Linear", Zeng et al. 2023, https://arxiv.org/abs/2205.13504), solved in
closed form by least squares, and the last value repeated.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nas.errors import ConfigError
from nas.model import ModelShape
from nas.tasks.base import TASKS, Task, TaskConfig, check

MONTH = datetime.timedelta(days=30)  # ETT's month: 30 * 24 hourly rows, 30 * 24 * 4 quarter-hour rows
SPLIT_MONTHS = (12, 4, 4)  # train, val, test
START = datetime.datetime(2016, 7, 1)  # the generated series' first date, as ETT's
VERSION = 1  # bump when the generated series changes


@dataclasses.dataclass(frozen=True)
class ForecastConfig(TaskConfig):
    """Forecasting's options (`task.*`). Time-Series-Library's ETTh1 setting:
    `task.path=ETTh1.csv task.lookback=336 task.horizon=96` (horizons 96, 192, 336, 720)."""

    path: str | None = None  # an ETT-format CSV: a `date` column, then the value columns; null: the generated series
    lookback: int = 336  # L: steps the model reads (PatchTST and DLinear: 336; Informer: 96)
    horizon: int = 96  # H: steps forecast (the protocol's 96, 192, 336, 720)
    patch_len: int = 16  # steps per patch, the model's positions (PatchTST: 16)
    patch_stride: int = 8  # steps between patch starts (PatchTST: 8)
    window_step: int = 1  # train and val windows start every window_step steps; test: every step, as the protocol
    channels: int = 7  # generated series only: value columns (ETT has 7)
    steps: int = 14_400  # generated series only: hourly rows (20 of ETT's months, all that its split uses)
    noise: float = 0.3  # generated series only: the noise's standard deviation, relative to each channel's scale

    def __post_init__(self):
        super().__post_init__()
        for name in ("lookback", "horizon", "patch_len", "patch_stride", "window_step", "channels", "steps"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.patch_len <= self.lookback, f"patch_len {self.patch_len} must be <= lookback {self.lookback}")
        check(math.isfinite(self.noise) and self.noise >= 0, f"noise must be >= 0, got {self.noise}")


@TASKS.register("forecast")
class ForecastTask(Task):
    """Forecast the next `horizon` steps of every channel from the last `lookback` steps.

    The series is split as Time-Series-Library's Dataset_ETT_hour / Dataset_ETT_minute split
    ETT: with M the rows in 30 days at the file's interval (720 hourly, 2880 quarter-hourly),
    train is rows [0, 12M), val [12M - L, 16M) and test [16M - L, 20M), so that the first window
    of val and test reads its lookback from the split before; rows past 20M are not used. A file
    shorter than 20 months is cut in the same 12/4/4 proportions of its rows. Every value is
    standardised with the train rows' mean and standard deviation (sklearn's StandardScaler);
    a window starting at each step is one example (train and val: every `window_step` steps).

    Without `path`, the series is generated (`generate`): per channel a daily and a weekly
    sinusoid, a linear trend and Gaussian noise of known variance, hourly from 2016-07-01; its
    best possible MSE is the noise's variance after standardisation (`noise_floor`).
    """

    Config = ForecastConfig
    readout = "forecast"
    metric = "mse"

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        c = self.config
        self.columns = read_header(Path(c.path).expanduser()) if c.path else [f"x{i}" for i in range(c.channels)]
        self.vocab_size = 1  # no token ids: the inputs are real values
        self.num_classes = c.horizon
        self.seq_len = c.lookback
        self.mean = self.std = None  # the train rows' statistics per channel, once loaded
        self.train_rows: np.ndarray | None = None  # the standardised train rows (T_train, C), once loaded
        self.noise_std: np.ndarray | None = None  # generated: the noise's standard deviation per channel (raw)
        self._baselines: dict[str, float] | None = None  # `baseline()`, once computed

    @property
    def shape(self) -> ModelShape:
        c = self.config
        return ModelShape(
            self.vocab_size,
            c.horizon,
            c.lookback,
            self.readout,
            self.causal,
            input="values",
            channels=len(self.columns),
            patch_len=c.patch_len,
            patch_stride=c.patch_stride,
        )

    def describe(self) -> dict:
        # predict.py standardises a raw window with mean/std and un-standardises the forecast
        self.setup()
        return {
            **super().describe(),
            "input": "values",
            "columns": self.columns,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "horizon": self.config.horizon,
        }

    def load(self) -> dict[str, Windows]:
        c = self.config
        if c.path:
            path = Path(c.path).expanduser()
            dates, values = read_csv(path, self.columns)
            interval = dates[1] - dates[0]  # ETT's rows are evenly spaced
        else:
            values, self.noise_std = generate(c)
            interval = datetime.timedelta(hours=1)
        borders = split_borders(len(values), interval, c.lookback)
        for split, (start, end) in zip(("train", "val", "test"), borders):
            if end - start < c.lookback + c.horizon:
                raise ConfigError(
                    f"task 'forecast': the {split} split has {end - start} rows (rows {start}..{end - 1}), "
                    f"fewer than lookback + horizon ({c.lookback} + {c.horizon})"
                )
        train_end = borders[0][1]
        self.mean, self.std = standard_scaler(values[:train_end])
        data = ((values - self.mean) / self.std).astype(np.float32)
        self.train_rows = data[:train_end]
        steps = {"train": c.window_step, "val": c.window_step, "test": 1}
        return {
            split: Windows(data, window_starts(start, end, c.lookback, c.horizon, steps[split]), c.lookback, c.horizon)
            for split, (start, end) in zip(("train", "val", "test"), borders)
        }

    def collate_batch(self, items: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Tensor]:
        values = torch.from_numpy(np.stack([x for x, _ in items]))  # (b, L, C)
        target = torch.from_numpy(np.stack([y for _, y in items]))  # (b, H, C)
        return {"tokens": values, "mask": torch.ones(values.shape[:2], dtype=torch.bool), "target": target}

    def noise_floor(self) -> float | None:
        """The best possible MSE on the generated series: the noise's variance after
        standardisation, averaged over the channels (a forecast that knows the seasonalities
        and the trend exactly misses by the noise alone); None for a CSV."""
        self.setup()
        if self.noise_std is None:
            return None
        return float(np.mean((self.noise_std / self.std) ** 2))

    def baseline(self) -> dict[str, float]:
        """Three forecasts scored on val and test, MSE and MAE: the train mean, which ignores the
        input (`val/mse`, ..., as every task's baseline), the linear map fit on train
        (`linear/val/mse`, ...; `fit_linear`) and the last value repeated (`last_value/...`).
        Computed once per task (the linear fit takes seconds at ETTm1's size)."""
        if self._baselines is None:
            self.setup()
            c = self.config
            weight, bias = fit_linear(self.train_rows, c.lookback, c.horizon)
            forecasts = {
                "": lambda x: np.zeros((len(x), 1, x.shape[2])),  # standardised: the train mean is 0
                "linear/": lambda x: linear_forecast(x, weight, bias),
                "last_value/": last_value,
            }
            self._baselines = {
                f"{name}{split}/{metric}": value
                for name, forecast in forecasts.items()
                for split in ("val", "test")
                for metric, value in forecast_scores(self.splits[split], forecast).items()
            }
        return dict(self._baselines)


class Windows(Dataset):
    """The windows of one split: (lookback (L, C), horizon (H, C)) starting at each of `starts`."""

    def __init__(self, data: np.ndarray, starts: np.ndarray, lookback: int, horizon: int):
        self.data, self.starts, self.lookback, self.horizon = data, starts, lookback, horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = int(self.starts[i])
        return self.data[s : s + self.lookback], self.data[s + self.lookback : s + self.lookback + self.horizon]

    def arrays(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Windows first..last-1 stacked: lookbacks (n, L, C) and horizons (n, H, C)."""
        view = np.lib.stride_tricks.sliding_window_view(self.data, self.lookback + self.horizon, axis=0)  # (T', C, L+H)
        windows = view[self.starts[first:last]].transpose(0, 2, 1)  # (n, L + H, C)
        return windows[:, : self.lookback], windows[:, self.lookback :]


def window_starts(start: int, end: int, lookback: int, horizon: int, step: int = 1) -> np.ndarray:
    """Where the windows of the rows [start, end) begin: every `step` rows while lookback and
    horizon fit (Time-Series-Library: end - start - L - H + 1 windows at step 1)."""
    return np.arange(start, end - lookback - horizon + 1, step)


def split_borders(rows: int, interval: datetime.timedelta, lookback: int) -> list[tuple[int, int]]:
    """[(start, end)] of train, val and test: Time-Series-Library's ETT borders (12, 4 and 4
    months of 30 days at `interval`; val and test start L rows early to read their first
    lookback), or the same proportions of `rows` when the file holds less than 20 months."""
    month = MONTH / interval  # rows in a month
    if rows < sum(SPLIT_MONTHS) * month:
        month = rows / sum(SPLIT_MONTHS)
    train, val = round(SPLIT_MONTHS[0] * month), round(sum(SPLIT_MONTHS[:2]) * month)
    end = round(sum(SPLIT_MONTHS) * month)
    return [(0, train), (max(0, train - lookback), val), (max(0, val - lookback), end)]


def standard_scaler(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (ddof 0) as sklearn's StandardScaler fits them; a
    constant column gets a standard deviation of 1, as there."""
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


# -- baselines ------------------------------------------------------------------------------
def fit_linear(train: np.ndarray, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares linear map from a channel's last `lookback` values to its next
    `horizon`, with a bias, shared by the channels (DLinear's Linear, individual=False), over
    every window of `train` (T, C). DLinear trains it by gradient descent; this is the exact
    minimiser of the same training MSE, from the normal equations accumulated in float64.

    Returns:
        weight (L, H) and bias (H,): forecast = lookback @ weight + bias, per channel.
    """
    gram = np.zeros((lookback + 1, lookback + 1))
    cross = np.zeros((lookback + 1, horizon))
    for series in train.T.astype(np.float64):
        windows = np.lib.stride_tricks.sliding_window_view(series, lookback + horizon)  # (n, L + H)
        for first in range(0, len(windows), 4096):  # in pieces: ETTm1's windows would take GiBs at once
            piece = windows[first : first + 4096]
            x = np.hstack([piece[:, :lookback], np.ones((len(piece), 1))])  # (n, L + 1)
            gram += x.T @ x
            cross += x.T @ piece[:, lookback:]
    solution = np.linalg.lstsq(gram, cross, rcond=None)[0]  # (L + 1, H); lstsq: safe if gram is singular
    return solution[:lookback], solution[lookback]


def linear_forecast(lookback: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Shape: lookback (n, L, C), weight (L, H), bias (H,) -> (n, H, C)."""
    per_channel = lookback.astype(np.float64).transpose(0, 2, 1) @ weight  # (n, C, H)
    return per_channel.transpose(0, 2, 1) + bias[None, :, None]


def last_value(lookback: np.ndarray) -> np.ndarray:
    """Every step of the horizon is the lookback's last value. Shape: (n, L, C) -> (n, 1, C),
    broadcast over the horizon."""
    return lookback[:, -1:, :].astype(np.float64)


def forecast_scores(windows: Windows, forecast) -> dict[str, float]:
    """{"mse", "mae"} of `forecast` (lookbacks (n, L, C) -> (n, H, C)) over every window."""
    squared = absolute = 0.0
    count = 0
    for first in range(0, len(windows), 1024):
        x, y = windows.arrays(first, first + 1024)
        error = np.broadcast_to(forecast(x), y.shape) - y
        squared += float(np.square(error).sum())
        absolute += float(np.abs(error).sum())
        count += error.size
    return {"mse": squared / count, "mae": absolute / count}


# -- the generated series ---------------------------------------------------------------------
def generate(config: ForecastConfig) -> tuple[np.ndarray, np.ndarray]:
    """A series of known structure: per channel c, at hour t,

        x_c(t) = level_c + scale_c * (a_c sin(2 pi t / 24 + p_c) + b_c sin(2 pi t / 168 + q_c)
                                      + drift_c * t / T + noise * e_t),   e_t ~ N(0, 1),

    with each channel's level, scale, amplitudes, phases and drift drawn from the seed.

    Returns:
        values (T, C) in raw units, and the noise's standard deviation per channel (scale_c * noise).
    """
    c = config
    rng = np.random.default_rng([c.seed, VERSION])
    channels = c.channels
    level, scale = rng.uniform(0, 30, channels), rng.uniform(1, 5, channels)
    daily, weekly = rng.uniform(0.5, 1.5, channels), rng.uniform(0.2, 0.8, channels)
    phase_day, phase_week = rng.uniform(0, 2 * np.pi, (2, channels))
    drift = rng.uniform(-1.5, 1.5, channels)
    t = np.arange(c.steps, dtype=np.float64)[:, None]  # (T, 1)
    signal = (
        daily * np.sin(2 * np.pi * t / 24 + phase_day)
        + weekly * np.sin(2 * np.pi * t / 168 + phase_week)
        + drift * t / c.steps
    )  # (T, C)
    values = level + scale * (signal + c.noise * rng.standard_normal((c.steps, channels)))
    return values, scale * c.noise


def write_csv(path: str | Path, values: np.ndarray, columns: list[str], interval=datetime.timedelta(hours=1)) -> None:
    """`values` (T, C) as an ETT-format CSV: a `date` column from 2016-07-01 00:00:00 every
    `interval`, then one column per channel."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", *columns])
        for i, row in enumerate(values):
            writer.writerow([(START + i * interval).strftime("%Y-%m-%d %H:%M:%S"), *(f"{v:.6g}" for v in row)])


# -- reading ETT's CSV ------------------------------------------------------------------------
def read_header(path: Path) -> list[str]:
    """The value columns' names from the header, which must start with `date`."""
    if not path.is_file():
        raise ConfigError(f"task 'forecast': no file {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    except (OSError, csv.Error) as err:
        raise ConfigError(f"{path}:1: cannot read the header ({err})") from None
    if not header or header[0].strip().lstrip("\ufeff") != "date" or len(header) < 2:
        raise ConfigError(f"{path}:1: expected a header 'date,<column>,...' (ETT's layout), got {str(header)[:100]}")
    return [name.strip() for name in header[1:]]


def read_csv(path: Path, columns: list[str]) -> tuple[list[datetime.datetime], np.ndarray]:
    """The dates and the values (T, C) of an ETT-format CSV; a bad row stops with one line
    naming file:line."""
    dates, rows = [], []
    width = len(columns) + 1
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)
            for fields in reader:
                where = f"{path}:{reader.line_num}"
                if not fields:
                    continue  # a blank line (e.g. at the end)
                if len(fields) != width:
                    raise ConfigError(
                        f"{where}: expected {width} fields (date and {width - 1} values), got {len(fields)}"
                    )
                date = parse_date(fields[0], where)
                if dates and date <= dates[-1]:
                    raise ConfigError(f"{where}: date {fields[0]} is not after the row before's ({dates[-1]})")
                dates.append(date)
                rows.append([parse_value(v, name, where) for v, name in zip(fields[1:], columns)])
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise ConfigError(f"{path}:{reader.line_num}: {err}") from None
    if len(rows) < 2:
        raise ConfigError(f"{path}: {len(rows)} rows of values; a series needs more")
    return dates, np.array(rows, dtype=np.float64)


def parse_date(text: str, where: str) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{where}: date {text[:40]!r} is not a date such as 2016-07-01 00:00:00") from None


def parse_value(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: column {column}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: column {column}: {text[:40]!r} is not a finite number")
    return value
