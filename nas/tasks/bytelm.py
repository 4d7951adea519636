"""Byte-level language modelling on text every Python machine has: the standard library's source.

Scored in bits per byte by masked-byte prediction (as BERT's masked LM, Devlin et al. 2019,
https://arxiv.org/abs/1810.04805, on bytes), because the searched models are non-causal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sysconfig
from collections.abc import Collection
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from nas.errors import ConfigError
from nas.tasks.base import IGNORE_INDEX, SPLITS, TASKS, Task, TaskConfig, check

MASK = 257  # token of a hidden byte; bytes are 1..256, 0 is padding
SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclasses.dataclass(frozen=True)
class ByteLMConfig(TaskConfig):
    seq_len: int = 512  # context length in bytes (4K and more work; the stdlib has ~12 MB)
    mask_prob: float = 0.15  # share of bytes hidden and scored
    root: str | None = None  # folder of .py files to read; None: this Python's standard library
    val_fraction: float = 0.05  # share of files in validation (picked by a hash of the path)
    test_fraction: float = 0.05  # share of files in test (picked the same way)
    max_files: int | None = None  # read at most this many files per split, for quick runs

    def __post_init__(self):
        super().__post_init__()
        check(self.seq_len >= 2, f"seq_len must be >= 2, got {self.seq_len}")
        check(0 < self.mask_prob < 1, f"mask_prob must be in (0, 1), got {self.mask_prob}")
        check(
            self.val_fraction > 0 and self.test_fraction > 0 and self.val_fraction + self.test_fraction < 1,
            "val_fraction and test_fraction must be > 0 and sum to less than 1",
        )
        check(self.max_files is None or self.max_files >= 1, f"max_files must be >= 1 or null, got {self.max_files}")


@TASKS.register("bytelm")
class ByteLMTask(Task):
    """Predict hidden bytes of Python source from the bytes around them.

    The standard library's .py files (tests and site-packages skipped) are split into
    train / val / test by a hash of each file's relative path, so the split does not depend on
    the seed and never cuts a file. Each split's files are joined and cut into seq_len windows.
    In every window a seeded random mask_prob of the bytes is replaced by a mask token; the
    target is the original byte there and nothing elsewhere, so the answer is never in the
    input. The score is bits per hidden byte. It sees context on both sides, so it is lower
    than a causal model's bits per byte on the same text; compare it only with itself.
    Different Python versions ship different files, so scores are comparable within one.
    """

    Config = ByteLMConfig
    readout = "tokens"
    metric = "bpb"

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = MASK + 1
        self.num_classes = self.vocab_size
        self.seq_len = self.config.seq_len

    def describe(self) -> dict:
        # Per position: the byte (output id - 1) at each hidden (MASK) position.
        return {
            **super().describe(),
            "input": "bytes",
            "offset": 1,
            "mask": MASK,
            "classes": ["<pad>", *(repr(bytes([b]))[2:-1] for b in range(256)), "<mask>"],
        }

    def load(self) -> dict[str, MaskedBytes]:
        c = self.config
        root = Path(c.root).expanduser() if c.root else standard_library()
        splits = {}
        for index, (split, files) in enumerate(split_files(root, c).items()):
            data = np.frombuffer(b"".join(map(read_bytes, files)), dtype=np.uint8)
            windows = len(data) // c.seq_len
            if windows == 0:
                raise ConfigError(
                    f"task 'bytelm': the {split} split of {root} has "
                    f"{len(data)} bytes, less than one seq_len ({c.seq_len})"
                )
            data = data[: windows * c.seq_len].reshape(windows, c.seq_len)
            rng = np.random.default_rng([c.seed, index])
            splits[split] = MaskedBytes(data, mask(rng, data.shape, c.mask_prob))
        return splits


def split_files(root: Path, config: ByteLMConfig) -> dict[str, list[Path]]:
    """The .py files under root per split, each split in a fixed order (by path hash)."""
    if not root.is_dir():
        raise ConfigError(f"task 'bytelm': missing folder {root}")
    bounds = {"val": config.val_fraction, "test": config.val_fraction + config.test_fraction}
    files = {split: [] for split in SPLITS}
    for u, path in hashed_files(root):
        split = "val" if u < bounds["val"] else "test" if u < bounds["test"] else "train"
        if config.max_files is None or len(files[split]) < config.max_files:
            files[split].append(path)
    return files


def standard_library() -> Path:
    """The folder of this Python's standard library: text every Python machine has."""
    return Path(sysconfig.get_paths()["stdlib"])


def hashed_files(
    root: Path, suffix: str = ".py", skip: Collection[str] = SKIP, hidden: bool = True
) -> list[tuple[float, Path]]:
    """The files under `root` whose names end in `suffix`, each with a number in [0, 1) from a
    hash of its path relative to root, in that number's order: a fixed shuffle that neither the
    seed nor the file system's listing order changes. Folders named in `skip` are not walked
    into; with `hidden` False, neither are files and folders whose names start with a dot."""
    keep = lambda name: hidden or not name.startswith(".")
    keyed = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in skip and keep(d)]  # not walked into at all
        for name in names:
            if name.endswith(suffix) and keep(name):
                path = Path(folder, name)
                digest = hashlib.sha256(path.relative_to(root).as_posix().encode()).digest()
                keyed.append((int.from_bytes(digest[:8], "big") / 2**64, path))
    keyed.sort()
    return keyed


def read_bytes(path: Path, task: str = "bytelm") -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:  # e.g. a file without read permission under the user's root
        raise ConfigError(f"task '{task}': cannot read {path} ({err.strerror})") from None


def mask(rng: np.random.Generator, shape: tuple[int, int], prob: float) -> np.ndarray:
    """A (windows, seq_len) bool mask hiding `prob` of the bytes, at least one per window."""
    hidden = rng.random(shape) < prob
    empty = np.flatnonzero(~hidden.any(1))
    hidden[empty, rng.integers(0, shape[1], len(empty))] = True  # so every window is scored
    return hidden


class MaskedBytes(Dataset):
    """Windows of bytes with their masks: the input hides the masked bytes, the target has them."""

    def __init__(self, data: np.ndarray, hidden: np.ndarray):
        self.data = data  # (windows, seq_len) uint8
        self.hidden = hidden  # (windows, seq_len) bool

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.data[i].astype(np.int64) + 1
        target = np.where(self.hidden[i], tokens, IGNORE_INDEX)
        tokens[self.hidden[i]] = MASK
        return tokens, target

    def scored_targets(self) -> np.ndarray:
        return self.data[self.hidden].astype(np.int64) + 1
