"""LRA Retrieval (Tay et al. 2021, https://arxiv.org/abs/2011.04006): do two papers of the ACL
Anthology Network cite one another? Read as bytes from LRA's TSV files, each document encoded
by the same model and the pair classified from the two (readout "pair"); a generated default
(are two documents on the same topic?) runs without the data.
# b batch, n longest document in the batch
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nas.errors import ConfigError
from nas.tasks.base import PAD, SPLITS, TASKS, GeneratedConfig, Task, check, fit_length, log_truncated
from nas.tasks.cache import generated_splits

FILES = {"train": "train", "val": "eval", "test": "test"}  # LRA's <prefix>.<name>.tsv per split
FIELDS = ("label", "id1", "id2", "text1", "text2")  # LRA's columns, no header row
LABELS = {b"0": 0, b"1": 1, b"0.0": 0, b"1.0": 1}  # LRA reads the label as a float
LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
VERSION = 1  # bump when generated data changes, so that old caches are not reused


@dataclasses.dataclass(frozen=True)
class RetrievalConfig(GeneratedConfig):
    """LRA Retrieval's options (`task.*`). Generates topic-matching pairs by default. LRA's files
    (lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv) at LRA's 4K bytes per document:
    `task.path=<lra_release>/tsv_data task.max_len=4000 task.truncate=true`."""

    path: str | None = None  # folder with <prefix>.train.tsv, .eval.tsv, .test.tsv; None: generate
    prefix: str = "new_aan_pairs"  # LRA's file-name prefix
    max_len: int = 256  # longest document, in bytes (LRA: 4000); generated documents are max_len/2..max_len
    truncate: bool = False  # cut longer documents to max_len (and log it), as LRA does, instead of stopping
    num_topics: int = 8  # generated: topics; a pair is positive when its documents share one
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500

    def __post_init__(self):
        super().__post_init__()
        check(self.max_len >= 16, f"max_len must be >= 16, got {self.max_len}")
        check(self.num_topics >= 2, f"num_topics must be >= 2, got {self.num_topics}")


class PairDataset(Dataset):
    """Pairs of byte documents and their labels; token = byte + 1."""

    def __init__(self, first: list[np.ndarray], second: list[np.ndarray], targets: np.ndarray):
        if not len(first) == len(second) == len(targets):
            raise ValueError(f"{len(first)}, {len(second)} documents and {len(targets)} targets")
        self.first, self.second, self.targets = first, second, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        pair = (np.asarray(self.first[i], dtype=np.int64) + 1, np.asarray(self.second[i], dtype=np.int64) + 1)
        return pair, self.targets[i]

    def scored_targets(self) -> np.ndarray:
        return self.targets


def collate_pairs(items: list) -> dict[str, Tensor]:
    """((doc1, doc2), label) items -> tokens and mask (b, 2, n) padded to the batch's longest
    document (pad 0, mask False), target (b,)."""
    n = max(len(doc) for pair, _ in items for doc in pair)
    tokens = torch.full((len(items), 2, n), PAD, dtype=torch.long)
    mask = torch.zeros(len(items), 2, n, dtype=torch.bool)
    for i, (pair, _) in enumerate(items):
        for j, doc in enumerate(pair):
            tokens[i, j, : len(doc)] = torch.from_numpy(doc)
            mask[i, j, : len(doc)] = True
    target = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return {"tokens": tokens, "mask": mask, "target": target}


@TASKS.register("lra_retrieval")
class RetrievalTask(Task):
    """Whether two documents match, each read as UTF-8 bytes (token = byte + 1).

    A batch's tokens and mask are (b, 2, n): the two documents of each pair, which the model
    encodes separately with the same weights and joins only in its pair readout. Reads LRA's
    TSV files (no header; label, id1, id2, text1, text2), or generates pairs of documents of
    words from topic vocabularies, positive when both documents share a topic (half of each
    split).
    """

    Config = RetrievalConfig
    readout = "pair"

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = 257
        self.num_classes = 2
        self.seq_len = self.config.max_len

    def collate_batch(self, items: list) -> dict[str, Tensor]:
        return collate_pairs(items)

    def describe(self) -> dict:
        return {**super().describe(), "input": "bytes", "offset": 1, "classes": ["0", "1"]}

    def load(self) -> dict[str, PairDataset]:
        c = self.config
        if c.path is not None:
            folder = Path(c.path).expanduser()
            return {
                split: read_tsv(folder / f"{c.prefix}.{FILES[split]}.tsv", c.max_len, c.truncate) for split in SPLITS
            }
        splits = {}
        for split, a in generated_splits(self, VERSION).items():
            docs = [[row[: int(length)] for row, length in zip(a["tokens"][:, j], a["lengths"][:, j])] for j in (0, 1)]
            splits[split] = PairDataset(docs[0], docs[1], a["label"])
        return splits

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n pairs: bytes (n, 2, max_len) uint8 padded with 0, lengths (n, 2), labels (n,)."""
        c = self.config
        words = topic_words(c.seed, c.num_topics)
        label = rng.permutation(np.arange(n) % 2)  # half positive, in random order
        first = rng.integers(0, c.num_topics, n)
        other = (first + rng.integers(1, c.num_topics, n)) % c.num_topics  # any topic but the first
        second = np.where(label == 1, first, other)
        tokens = np.zeros((n, 2, c.max_len), dtype=np.uint8)
        lengths = np.zeros((n, 2), dtype=np.int16)
        for i in range(n):
            for j, topic in enumerate((first[i], second[i])):
                doc = document(rng, words[topic], words[-1], c.max_len)
                tokens[i, j, : len(doc)], lengths[i, j] = doc, len(doc)
        return {"tokens": tokens, "lengths": lengths, "label": label}


def topic_words(seed: int, topics: int, per_topic: int = 24) -> list[list[bytes]]:
    """Each topic's words, then (last) words every topic uses: lowercase words of 3-8 letters,
    a topic's drawn from its own 8 letters, so that topics differ in words and in letters."""
    rng = np.random.default_rng([seed, 0xAA])  # apart from the examples' stream
    alphabets = [rng.choice(LETTERS, 8, replace=False) for _ in range(topics)] + [LETTERS]
    return [[rng.choice(abc, rng.integers(3, 9)).tobytes() for _ in range(per_topic)] for abc in alphabets]


def document(rng: np.random.Generator, topic: list[bytes], common: list[bytes], max_len: int) -> np.ndarray:
    """Words joined by spaces, the first the topic's and each other one the topic's or a common
    one at even odds, cut at a space to max_len/2..max_len bytes."""
    target = int(rng.integers(max_len // 2, max_len + 1))
    count = target // 3 + 1  # words of 3-8 letters and a space: more than target bytes
    topical, index = rng.random(count) < 0.5, rng.integers(0, len(topic), count)
    topical[0] = True  # so that every document says its topic
    text = b" ".join((topic if t else common)[k] for t, k in zip(topical, index))
    if len(text) > target:
        text = text[:target]
        text = text[: text.rfind(b" ")] if b" " in text else text
    return np.frombuffer(text, dtype=np.uint8)


def read_tsv(path: Path, max_len: int, truncate: bool) -> PairDataset:
    """One of LRA's AAN files: per line label, id1, id2, text1, text2, tab-separated, no header,
    no quoting (LRA reads it with use_quote_delim=False); the texts as raw bytes."""
    if not path.is_file():
        raise ConfigError(f"lra_retrieval: missing file {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    first, second, labels, truncated = [], [], [], 0
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue  # a blank line, e.g. the last
        where = f"{path}:{lineno}"
        fields = line.split(b"\t")
        if len(fields) != len(FIELDS):
            raise ConfigError(
                f"{where}: expected {len(FIELDS)} tab-separated fields ({', '.join(FIELDS)}), got {len(fields)}"
            )
        label = LABELS.get(fields[0].strip())
        if label is None:
            raise ConfigError(f"{where}: label {fields[0][:20].decode('utf-8', 'replace')!r} is not 0 or 1")
        for name, text, docs in (("text1", fields[3], first), ("text2", fields[4], second)):
            if not text:
                raise ConfigError(f"{where}: {name} is empty")
            doc = np.frombuffer(text, dtype=np.uint8)
            fitted = fit_length(doc, max_len, truncate, f"{where} ({name})")
            truncated += len(fitted) < len(doc)
            docs.append(fitted)
        labels.append(label)
    if not labels:
        raise ConfigError(f"{path}: no examples")
    log_truncated(truncated, 2 * len(labels), max_len, path)
    return PairDataset(first, second, np.array(labels, dtype=np.int64))
