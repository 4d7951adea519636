"""Byte-level text classification, LRA's Text task (Tay et al. 2021,
https://arxiv.org/abs/2011.04006: IMDb reviews as UTF-8 bytes), read from the user's files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from nas.errors import ConfigError
from nas.tasks.base import TASKS, SequenceDataset, Task, TaskConfig, check, fit_length, log_truncated

TEXT_COLUMNS = ("text", "source")  # accepted names of the text column (any case)
LABEL_COLUMNS = ("label", "target")  # accepted names of the label column (any case)


@dataclasses.dataclass(frozen=True)
class TextConfig(TaskConfig):
    """LRA Text's options (`task.*`), from files you have (no download):
    `task.train_file=~/imdb/train.tsv task.test_file=~/imdb/test.tsv`. TSV with a header naming
    text and label columns (or Source/Target), or JSONL of {"text": ..., "label": ...}. LRA reads
    the first 4K bytes of each review: `task.truncate=true`."""

    train_file: str | None = None  # training file: .tsv (header text, label) or .jsonl
    val_file: str | None = None  # validation file; None holds out val_fraction of train
    test_file: str | None = None  # test file (LRA uses IMDb's test set)
    val_fraction: float = 0.1  # share of train held out for validation when val_file is None
    num_classes: int = 2  # labels are 0..num_classes-1 (IMDb: 2)
    max_len: int = 4096  # longest review the model takes, in bytes (LRA: 4K)
    truncate: bool = False  # cut longer reviews to max_len (and log it) instead of stopping

    def __post_init__(self):
        super().__post_init__()
        check(self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}")
        check(self.max_len >= 1, f"max_len must be >= 1, got {self.max_len}")
        check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")


@TASKS.register("text")
class TextTask(Task):
    """The label of a text, read as UTF-8 bytes (token = byte + 1, as LRA's ByteTextEncoder).

    Files are TSV with a header row naming a text and a label column (text/label or LRA's
    Source/Target, quoted as Python's csv module writes them), or JSONL with one
    {"text": ..., "label": ...} object per line. Labels are integers.
    """

    Config = TextConfig

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = 257
        self.num_classes = self.config.num_classes
        self.seq_len = self.config.max_len

    def describe(self) -> dict:
        return {
            **super().describe(),
            "input": "bytes",
            "offset": 1,
            "classes": [str(i) for i in range(self.num_classes)],
        }

    def load(self) -> dict[str, SequenceDataset]:
        c = self.config
        if c.train_file is None or c.test_file is None:
            raise ConfigError(
                "task 'text': set train_file and test_file to your files (TSV with a text/label header, or JSONL)"
            )
        read = lambda name: read_file(Path(name).expanduser(), c.num_classes, c.max_len, c.truncate)
        splits = {"train": read(c.train_file), "test": read(c.test_file)}
        if c.val_file is not None:
            splits["val"] = read(c.val_file)
        else:
            splits["train"], splits["val"] = hold_out(splits["train"], c.val_fraction, c.seed)
        return splits


def hold_out(data: SequenceDataset, fraction: float, seed: int):
    """A seeded random `fraction` of `data` as validation, the rest as training."""
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, round(fraction * len(data)))
    if n_val >= len(data):
        raise ConfigError(
            f"task 'text': {len(data)} training examples are too few to hold out a validation split; pass val_file"
        )
    pick = lambda idx: SequenceDataset([data.tokens[i] for i in idx], data.targets[idx], shift=data.shift)
    return pick(np.sort(order[n_val:])), pick(np.sort(order[:n_val]))


def read_file(path: Path, num_classes: int, max_len: int, truncate: bool) -> SequenceDataset:
    """A TSV or JSONL file of (text, label) rows as byte tokens and labels."""
    if not path.is_file():
        raise ConfigError(f"text: missing file {path}")
    if path.suffix not in (".tsv", ".jsonl"):
        raise ConfigError(f"text: {path} must end in .tsv or .jsonl")
    rows = read_tsv(path) if path.suffix == ".tsv" else read_jsonl(path)
    tokens, labels, truncated = [], [], 0
    try:
        for lineno, text, label in rows:
            where = f"{path}:{lineno}"
            label = parse_label(label)
            if not isinstance(text, str) or label is None or not 0 <= label < num_classes:
                raise ConfigError(f"{where}: expected a text and an integer label in 0..{num_classes - 1}")
            try:
                data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            except UnicodeEncodeError:  # JSON can spell a lone surrogate, UTF-8 cannot
                raise ConfigError(f"{where}: text is not valid Unicode (a lone surrogate such as \\ud800)") from None
            fitted = fit_length(data, max_len, truncate, where)
            truncated += len(fitted) < len(data)
            tokens.append(fitted)
            labels.append(label)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    except OSError as err:  # e.g. no read permission
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if not tokens:
        raise ConfigError(f"{path}: no examples")
    log_truncated(truncated, len(tokens), max_len, path)
    return SequenceDataset(tokens, np.array(labels, dtype=np.int64), shift=1)


def parse_label(label) -> int | None:
    """An integer label from JSON (an int) or TSV (ASCII digits); None for anything else."""
    if isinstance(label, str) and re.fullmatch(r"[0-9]{1,18}", label.strip()):
        return int(label)
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    return None


def read_tsv(path: Path):
    """(line, text, label) per row of a TSV file whose header names the two columns."""
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is not a column name
        reader = csv.reader(f, delimiter="\t")
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            text_col, label_col = column(header, TEXT_COLUMNS), column(header, LABEL_COLUMNS)
            if text_col is None or label_col is None:
                raise ConfigError(
                    f"{path}:1: expected a header naming a text column "
                    f"({'/'.join(TEXT_COLUMNS)}) and a label column "
                    f"({'/'.join(LABEL_COLUMNS)}), got {header!r}"
                )
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    raise ConfigError(
                        f"{path}:{reader.line_num}: expected {len(header)} tab-separated fields, got {len(row)}"
                    )
                yield reader.line_num, row[text_col], row[label_col]
        except csv.Error as err:
            raise ConfigError(f"{path}:{reader.line_num}: {err}") from None


def column(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((header.index(n) for n in names if n in header), None)


def read_jsonl(path: Path):
    """(line, text, label) per line of a JSONL file of {"text": ..., "label": ...} objects."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{lineno}: not JSON ({err.msg})") from None
            except (ValueError, RecursionError) as err:  # e.g. an integer of over 4300 digits
                problem = "nested too deeply" if isinstance(err, RecursionError) else "a number too long to read"
                raise ConfigError(f"{path}:{lineno}: not JSON ({problem})") from None
            if not isinstance(row, dict) or "text" not in row or "label" not in row:
                raise ConfigError(f"{path}:{lineno}: expected an object with text and label")
            yield lineno, row["text"], row["label"]
