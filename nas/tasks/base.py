"""The Task base class, its batches, its loss and metrics, and the majority / unigram baselines.

A task is a LightningDataModule that also knows its vocabulary, output size and scoring. Batches
are dicts: `tokens` (b, n) long with pad id 0, `mask` (b, n) bool with True = real token, and
`target`, (b,) for `readout="classify"` or (b, n) for `readout="tokens"` with IGNORE_INDEX (-100) where unscored.
A forecast (`readout="forecast"`, nas/tasks/forecast.py) has real values instead: `tokens` (b, L,
channels) float, `mask` (b, L) all True, `target` (b, H, channels) float.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from nas.errors import ConfigError, build_config
from nas.metrics import IGNORE_INDEX
from nas.model import ModelShape
from nas.registry import Registry

TASKS = Registry("task")
PAD = 0  # token id of padding in every task
SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Options every task has; each task's Config adds its own."""

    batch_size: int = 32  # examples per batch
    num_workers: int = 0  # DataLoader worker processes; 0 loads in the training process
    seed: int = 0  # seeds generation, held-out splits, masks and the training shuffle

    def __post_init__(self):
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")


@dataclasses.dataclass(frozen=True)
class GeneratedConfig(TaskConfig):
    """Options of a task that generates its data: the size of each split."""

    num_train: int = 10_000  # generated training examples
    num_val: int = 1_000  # generated validation examples
    num_test: int = 1_000  # generated test examples

    def __post_init__(self):
        super().__post_init__()
        check(min(self.num_train, self.num_val, self.num_test) >= 1, "num_train, num_val and num_test must be >= 1")


def check(condition: bool, message: str) -> None:
    """Config validation: a failed check becomes a ConfigError naming the task."""
    if not condition:
        raise ValueError(message)


class Task(pl.LightningDataModule):
    """A dataset with its splits, vocabulary, readout and metric.

    Subclasses set `Config`, `readout` and `metric`, set `vocab_size`, `num_classes` and `seq_len`
    in `__init__` (so they are known before any data is read), and implement `load()`.

    Args:
        data_dir: where generated data and caches live (one subfolder per task).
        **options: fields of the task's `Config`; unknown names give one clear line.
    """

    name: ClassVar[str]  # set by the registry
    Config: ClassVar[type] = TaskConfig
    readout: ClassVar[str] = "classify"  # "classify": a label per sequence; "tokens": per position
    metric: ClassVar[str] = "acc"  # "acc", "bpb" (bits per byte) or "mse" (a forecast's; lower is better)
    causal: ClassVar[bool] = False  # True: a position may see only the past (next-token models)

    vocab_size: int  # token ids are 0..vocab_size-1, 0 is padding
    num_classes: int  # model output size: classes, or the vocabulary for token outputs
    seq_len: int  # the longest batch the task yields

    def __init__(self, data_dir: str | os.PathLike = "data_cache", **options):
        super().__init__()
        self.config = make_config(self.Config, self.name, options)
        self.data_dir = Path(data_dir).expanduser()
        self.splits: dict[str, Dataset] = {}

    def record(self) -> dict:
        """The task as plain data, its registered name and every option, which checkpoints, run
        folders and standalone jobs store; `nas.tasks.build_task` builds it again."""
        return {"name": self.name, **dataclasses.asdict(self.config)}

    @property
    def shape(self) -> ModelShape:
        """The sizes a model of this task is built with (its max_len is the task's seq_len)."""
        return ModelShape(self.vocab_size, self.num_classes, self.seq_len, self.readout, self.causal)

    def describe(self) -> dict:
        """What a user of an exported model needs to feed it, as plain JSON types (the export
        stores it as task.json; predict.py reads it): `input` is how raw input becomes token
        ids ("ids": give the ids; "bytes": UTF-8 bytes, id = byte + 1; "listops": the
        expression's tokens through `tokens`), and `classes` names each output (None: the
        output index is the answer, e.g. a token id). Subclasses override what differs."""
        return {
            "task": self.name,
            "input": "ids",
            "vocab_size": self.vocab_size,
            "pad": PAD,
            "max_len": self.seq_len,
            "readout": self.readout,
            "metric": self.metric,
            "classes": None,
        }

    def load(self) -> dict[str, Dataset]:
        """Read or generate the data: a Dataset per split, yielding (tokens, target) arrays."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node first, so only it generates the cache;
        # the others then read it in setup().
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        c = self.config
        data = self.splits[split]
        sampler = self.train_sampler(data) if shuffle else None
        return DataLoader(
            data,
            batch_size=c.batch_size,
            sampler=sampler,
            num_workers=c.num_workers,
            collate_fn=self.collate_batch,
            persistent_workers=c.num_workers > 0,
        )

    def collate_batch(self, items: list) -> dict[str, Tensor]:
        """A batch of a split's examples (`collate`: token ids padded); a task of other inputs
        (a forecast's real values) overrides it."""
        return collate(items)

    def train_sampler(self, data: Dataset) -> Sampler[int]:
        """The indices of `data` that a training epoch visits, in order: every example once, in a
        fresh order per epoch (`EpochShuffle`). A task that draws its examples overrides it."""
        return EpochShuffle(len(data), self.config.seed)

    def baseline(self) -> dict[str, float]:
        """What a model that ignores its input scores, fit on train.

        Returns:
            {"val/<metric>": ..., "test/<metric>": ...}: majority-class accuracy for "acc",
            bits per byte of a unigram model (add-one smoothed) for "bpb".
        """
        self.setup()
        train = scored_targets(self.splits["train"])
        scores = {}
        for split in ("val", "test"):
            targets = scored_targets(self.splits[split])
            if self.metric == "acc":
                scores[f"{split}/acc"] = majority_accuracy(train, targets)
            else:
                scores[f"{split}/bpb"] = unigram_bpb(train, targets, self.num_classes)
        return scores


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch): a run resumed at epoch e sees the order that an
    uninterrupted run sees there. Lightning calls `set_epoch` before every epoch."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def make_config(cls: type, task: str, options: dict):
    return build_config(cls, options, f"task '{task}'")


class SequenceDataset(Dataset):
    """Examples held in memory: token rows (a 2-D array or a list of 1-D arrays) and targets.

    `shift` is added to stored values to make token ids, so bytes and pixels can be stored as
    uint8 while id 0 stays free for padding.
    """

    def __init__(self, tokens, targets: np.ndarray, shift: int = 0):
        if len(tokens) != len(targets):
            raise ValueError(f"{len(tokens)} token rows but {len(targets)} targets")
        self.tokens = tokens
        self.targets = targets
        self.shift = shift

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.tokens[i], dtype=np.int64) + self.shift, self.targets[i]

    def scored_targets(self) -> np.ndarray:
        return self.targets[self.targets != IGNORE_INDEX].ravel()


def scored_targets(data: Dataset) -> np.ndarray:
    """Every scored target of a split as one 1-D array."""
    if hasattr(data, "scored_targets"):
        return data.scored_targets()
    targets = [np.atleast_1d(target) for _, target in data]
    flat = np.concatenate(targets)
    return flat[flat != IGNORE_INDEX]


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Tensor]:
    """Pad (tokens, target) pairs to the longest in the batch (pad 0, unscored target IGNORE_INDEX)."""
    n = max(len(tokens) for tokens, _ in items)
    batch = len(items)
    tokens = torch.full((batch, n), PAD, dtype=torch.long)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    per_position = np.ndim(items[0][1]) > 0
    target = torch.full((batch, n) if per_position else (batch,), IGNORE_INDEX, dtype=torch.long)
    for i, (row, y) in enumerate(items):
        tokens[i, : len(row)] = torch.from_numpy(np.asarray(row, dtype=np.int64))
        mask[i, : len(row)] = True
        if per_position:
            target[i, : len(y)] = torch.from_numpy(np.asarray(y, dtype=np.int64))
        else:
            target[i] = int(y)
    return {"tokens": tokens, "mask": mask, "target": target}


def majority_accuracy(train: np.ndarray, targets: np.ndarray) -> float:
    """Accuracy on `targets` of always answering train's most frequent target."""
    majority = np.bincount(train).argmax()
    return float(np.mean(targets == majority))


def unigram_bpb(train: np.ndarray, targets: np.ndarray, num_classes: int) -> float:
    """Bits per symbol on `targets` of train's add-one smoothed unigram distribution."""
    counts = np.bincount(train, minlength=num_classes) + 1.0
    log2_p = np.log2(counts / counts.sum())
    return float(-log2_p[targets].mean())


def fit_length(tokens: np.ndarray, max_len: int, truncate: bool, where: str) -> np.ndarray:
    """`tokens` if they fit max_len, else cut to max_len if `truncate`, else a ConfigError."""
    if len(tokens) <= max_len:
        return tokens
    if not truncate:
        raise ConfigError(
            f"{where}: sequence of {len(tokens)} tokens is longer than max_len "
            f"{max_len}; raise max_len or set truncate=true"
        )
    return tokens[:max_len]


def log_truncated(count: int, total: int, max_len: int, source: Path) -> None:
    if count:
        log.warning("%s: truncated %d of %d sequences to max_len %d (truncate=true)", source, count, total, max_len)
