"""Causal byte-level language modelling in bits per byte, as Transformer-XL (Dai et al. 2019,
https://arxiv.org/abs/1901.02860) and Reformer (https://arxiv.org/abs/2001.04451) report it on
enwik8, the Hutter Prize's first 10^8 bytes of English Wikipedia (http://mattmahoney.net/dc/textdata).
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Sampler

from nas.errors import ConfigError
from nas.tasks.base import TASKS, Task, TaskConfig, check
from nas.tasks.bytelm import hashed_files, read_bytes, standard_library

ENWIK8 = ("enwik8", "enwik8.zip")  # the published file's names, plain and zipped
ENWIK8_BYTES = 100_000_000  # its size: the split below then is its standard 90M / 5M / 5M
SHARES = (90, 5, 5)  # percent of the bytes in train / val / test, in that order
CLASSES = ["<pad>", *(repr(bytes([b]))[2:-1] for b in range(256))]  # output id = byte + 1

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LMConfig(TaskConfig):
    """The language model's options (`task.*`). The text, cut 90/5/5 by bytes into train / val /
    test: `task.path=~/data/enwik8` (or `enwik8.zip` as published: its standard 90M/5M/5M
    split), any text file, or a folder of them; by default this Python's standard library."""

    path: str | None = None  # enwik8, enwik8.zip, a file or a folder of files; None: the standard library's .py files
    seq_len: int = 512  # context in bytes: a window predicts each of its seq_len bytes' next byte
    crops_per_epoch: int | None = None  # random training crops per epoch; None: train bytes / seq_len
    val_windows: int | None = None  # validate on the first this many val windows only; None: all (test: always all)

    def __post_init__(self):
        super().__post_init__()
        check(self.seq_len >= 1, f"seq_len must be >= 1, got {self.seq_len}")
        for name in ("crops_per_epoch", "val_windows"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"{name} must be >= 1 or null, got {value}")


@TASKS.register("lm")
class LMTask(Task):
    """Predict every next byte of a text from the bytes before it (a causal model).

    The text's bytes are cut into train (the first 90%), val (the next 5%) and test (the last
    5%); on enwik8's 100,000,000 bytes that is the published 90M / 5M / 5M split. A folder is
    read as its files (hidden ones skipped) joined in a fixed order shuffled by a hash of each
    relative path, so that val and test are not the last files by name. Token = byte + 1 (0 is
    padding); the target at position i is the byte at position i + 1, scored at every position.

    Training draws random crops of seq_len + 1 bytes from the train bytes, new ones each epoch
    (from the seed and the epoch). Val and test are consecutive windows that score every byte
    after a split's first exactly once, each seeing only the bytes before it in its own window;
    published enwik8 figures give every byte a longer context (Transformer-XL: its recurrence
    memory of past segments), so the same model scores more bits per byte here than there.
    """

    Config = LMConfig
    readout = "tokens"
    metric = "bpb"
    causal = True

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = len(CLASSES)
        self.num_classes = self.vocab_size
        self.seq_len = self.config.seq_len

    def describe(self) -> dict:
        # Output i is the distribution of the byte after input byte i (output id - 1), as a
        # causal model computes it from input bytes 0..i alone.
        return {**super().describe(), "input": "bytes", "offset": 1, "causal": self.causal, "classes": CLASSES}

    def load(self) -> dict[str, Dataset]:
        c = self.config
        text, source = read_text(c.path)
        splits = dict(zip(("train", "val", "test"), split_bytes(text, c.seq_len, source)))
        return {
            "train": Crops(splits["train"], c.seq_len),
            "val": Windows(splits["val"], c.seq_len, c.val_windows),
            "test": Windows(splits["test"], c.seq_len),
        }

    def train_sampler(self, data: Crops) -> CropStarts:
        c = self.config
        count = c.crops_per_epoch or max(1, (len(data.data) - 1) // c.seq_len)
        return CropStarts(len(data), count, c.seed)


def read_text(path: str | None) -> tuple[np.ndarray, str]:
    """The bytes of `path` (a file, the file in a .zip, or a folder's files joined), or of the
    standard library's .py files, as uint8, with a name for messages."""
    if path is None:
        root = standard_library()
        return join_files(hashed_files(root)), f"the standard library's .py files ({root})"
    source = Path(path).expanduser()
    if source.is_dir():
        files = hashed_files(source, suffix="", skip=(), hidden=False)
        if not files:
            raise ConfigError(f"task 'lm': folder {source} holds no files (names starting with a dot are skipped)")
        return join_files(files), str(source)
    if not source.is_file():
        raise ConfigError(f"task 'lm': path {source}: no such file or folder")
    data = read_zip(source) if source.suffix == ".zip" else read_bytes(source, "lm")
    if source.name in ENWIK8 and len(data) != ENWIK8_BYTES:
        log.warning(
            "%s has %d bytes, not enwik8's %d: its 90/5/5 split is not the published one, and its "
            "bits per byte do not compare with published enwik8 figures",
            source,
            len(data),
            ENWIK8_BYTES,
        )
    return np.frombuffer(data, dtype=np.uint8), str(source)


def join_files(files: list[tuple[float, Path]]) -> np.ndarray:
    """The files' bytes, joined in the order given (`hashed_files`'s)."""
    return np.frombuffer(b"".join(read_bytes(path, "lm") for _, path in files), dtype=np.uint8)


def read_zip(path: Path) -> bytes:
    """The file a .zip holds: the one named as the zip less `.zip` (enwik8.zip holds enwik8), or its only file."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            named = [m for m in members if m.filename == path.stem]
            if not named and len(members) != 1:
                raise ConfigError(
                    f"task 'lm': {path} holds {len(members)} files and none named {path.stem}; unzip the one to read"
                )
            return archive.read((named or members)[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as err:
        # RuntimeError: encrypted; NotImplementedError: a compression method zipfile lacks
        raise ConfigError(f"task 'lm': {path} is not a readable zip file ({err})") from None
    except OSError as err:
        raise ConfigError(f"task 'lm': cannot read {path} ({err.strerror or err})") from None


def split_bounds(size: int) -> tuple[int, int]:
    """Where val and test start in a text of `size` bytes: after 90% and 95% of it (on enwik8,
    bytes 90,000,000 and 95,000,000)."""
    return size * SHARES[0] // 100, size * (SHARES[0] + SHARES[1]) // 100


def split_bytes(text: np.ndarray, seq_len: int, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, val and test bytes of `text`, each long enough for one window of seq_len + 1 bytes."""
    if len(text) == 0:
        raise ConfigError(f"task 'lm': {source} is empty")
    val_start, test_start = split_bounds(len(text))
    splits = text[:val_start], text[val_start:test_start], text[test_start:]
    for name, share, data in zip(("train", "val", "test"), SHARES, splits):
        if len(data) < seq_len + 1:
            raise ConfigError(
                f"task 'lm': {source} has {len(text)} bytes, and its {name} split ({share}%) {len(data)}, "
                f"fewer than one window of seq_len + 1 = {seq_len + 1}; give a longer text or a smaller seq_len"
            )
    return splits


class Crops(Dataset):
    """Item `start`: the seq_len + 1 bytes from there, as tokens (the first seq_len) and targets
    (the last seq_len), both byte + 1. Any start that fits is an item; `CropStarts` picks them."""

    def __init__(self, data: np.ndarray, seq_len: int):
        self.data, self.seq_len = data, seq_len  # data: (bytes,) uint8

    def __len__(self) -> int:
        return len(self.data) - self.seq_len

    def __getitem__(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= start < len(self):
            raise IndexError(start)
        window = self.data[start : start + self.seq_len + 1].astype(np.int64) + 1  # (seq_len + 1,)
        return window[:-1], window[1:]

    def scored_targets(self) -> np.ndarray:
        """Every byte a crop can score (all but the first), for the unigram baseline."""
        return self.data[1:].astype(np.int64) + 1


class CropStarts(Sampler[int]):
    """`count` crop starts drawn uniformly from range(starts), from (seed, epoch) alone, so that
    a run resumed at epoch e draws what an uninterrupted one draws there. Lightning calls
    `set_epoch` before every epoch."""

    def __init__(self, starts: int, count: int, seed: int):
        self.starts, self.count, self.seed, self.epoch = starts, count, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(rng.integers(0, self.starts, self.count).tolist())

    def __len__(self) -> int:
        return self.count


class Windows(Dataset):
    """Consecutive windows of seq_len scored bytes: window k's tokens are bytes k*seq_len ..
    (k+1)*seq_len - 1 and its targets the bytes one further on, so each byte after the first is
    scored once (the last window may be shorter). `limit` keeps only the first that many."""

    def __init__(self, data: np.ndarray, seq_len: int, limit: int | None = None):
        self.data, self.seq_len = data, seq_len  # data: (bytes,) uint8
        windows = -(-(len(data) - 1) // seq_len)  # ceil: a shorter last window scores the tail
        self.count = windows if limit is None else min(limit, windows)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= k < self.count:
            raise IndexError(k)
        start = k * self.seq_len
        window = self.data[start : start + self.seq_len + 1].astype(np.int64) + 1  # (<= seq_len + 1,)
        return window[:-1], window[1:]

    def scored_targets(self) -> np.ndarray:
        end = min(len(self.data), self.count * self.seq_len + 1)
        return self.data[1:end].astype(np.int64) + 1
