"""DNA sequence classification: Genomic Benchmarks' folders (Grešová et al. 2023,
https://doi.org/10.1186/s12863-023-01123-8) or a `sequence,label` CSV, read as they are, and a
generated motif task (which planted motif a sequence holds) that runs without any data.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import torch

from nas.errors import ConfigError
from nas.tasks.base import SPLITS, TASKS, GeneratedConfig, SequenceDataset, Task, check, fit_length, log_truncated
from nas.tasks.cache import generated_splits
from nas.tasks.text import column, parse_label

BASES = "ACGTN"  # token ids 1..5; 0 is padding
TOKENS = {base: i + 1 for i, base in enumerate(BASES)}
COMPLEMENT = np.array([0, 4, 3, 2, 1, 5], dtype=np.uint8)  # by token id: pad, A->T, C->G, G->C, T->A, N->N
SEQUENCE_COLUMNS = ("sequence", "seq")  # accepted names of the CSV's sequence column (any case)
LABEL_COLUMNS = ("label",)
VERSION = 1  # bump when generated data changes, so that old caches are not reused

_IDS = np.zeros(256, dtype=np.uint8)  # byte -> token id, 0 for anything but A/C/G/T/N in either case
for _base, _id in TOKENS.items():
    _IDS[ord(_base)] = _IDS[ord(_base.lower())] = _id


@dataclasses.dataclass(frozen=True)
class GenomicsConfig(GeneratedConfig):
    """The genomics task's options (`task.*`). Generates its motif task by default. A Genomic
    Benchmarks dataset as `genomic_benchmarks.loc2seq.download_dataset` writes it:
    `task.path=~/.genomic_benchmarks/human_nontata_promoters task.max_len=251`; CSV files with
    a header naming `sequence` (or `seq`) and `label`: `task.train_file=train.csv task.test_file=test.csv`."""

    path: str | None = None  # a Genomic Benchmarks folder: train/<class>/*.txt and test/<class>/*.txt
    train_file: str | None = None  # or a CSV with a sequence,label header (labels 0..num_classes-1)
    val_file: str | None = None  # CSV validation file; None holds out val_fraction of train
    test_file: str | None = None  # CSV test file
    val_fraction: float = 0.1  # share of train held out (seeded) for validation; Genomic Benchmarks has no val
    num_classes: int = 4  # motifs of the generated task; labels of a CSV; class folders of a benchmark
    max_len: int = 64  # longest sequence the model takes, in bases; the generated sequences' length
    truncate: bool = False  # cut longer sequences to max_len (and log it) instead of stopping
    reverse_complement: bool = False  # train also on each training sequence's reverse complement
    motif_len: int = 6  # generated: bases per planted motif
    motif_copies: int = 3  # generated: copies of the motif per sequence, one in each 1/copies of it
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500

    def __post_init__(self):
        super().__post_init__()
        check(self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}")
        check(self.max_len >= 1, f"max_len must be >= 1, got {self.max_len}")
        check(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        files = self.train_file is not None or self.test_file is not None or self.val_file is not None
        check(not (files and self.path is not None), "give path (a Genomic Benchmarks folder) or CSV files, not both")
        check(
            self.path is not None or files or 2 <= self.motif_len <= min(self.max_len, 27),
            f"motif_len must be in 2..{min(self.max_len, 27)} (max_len, at most 27), got {self.motif_len}",
        )
        check(
            self.path is not None or files or 1 <= self.motif_copies <= self.max_len // self.motif_len,
            f"motif_copies must be in 1..{self.max_len // self.motif_len} (max_len // motif_len), got {self.motif_copies}",
        )
        check(
            self.path is not None or files or 4**self.motif_len >= 2 * self.num_classes,
            f"{self.num_classes} motifs of {self.motif_len} bases cannot differ on both strands; lengthen motif_len",
        )


@TASKS.register("genomics")
class GenomicsTask(Task):
    """The class of a DNA sequence, one token per base (A C G T N, any case; id = 1..5).

    Reads a Genomic Benchmarks folder (one sequence per file, classes named by the folders,
    label = the folder's place in sorted order) or CSV files, or generates its motif task: on
    uniform random bases, `motif_copies` copies of the class's motif are planted, one at a random
    place in each of as many equal stretches of the sequence, and no other class's motif occurs
    on either strand, so the label is exactly which motif is there.
    With `reverse_complement`, the training split also holds every sequence read from the other
    strand (reversed, A<->T, C<->G), with its label; validation and test stay as read.
    """

    Config = GenomicsConfig

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = len(BASES) + 1
        self.num_classes = self.config.num_classes
        self.seq_len = self.config.max_len

    def describe(self) -> dict:
        return {**super().describe(), "input": "dna", "tokens": dict(TOKENS), "classes": self.class_names()}

    def class_names(self) -> list[str]:
        """The folders' names for a Genomic Benchmarks dataset, the label numbers for CSV files,
        each class's motif for the generated task."""
        c = self.config
        if c.path is not None:
            return benchmark_classes(Path(c.path).expanduser(), self.num_classes)
        if c.train_file is not None or c.test_file is not None:
            return [str(i) for i in range(self.num_classes)]
        return ["".join(BASES[i - 1] for i in motif) for motif in motifs(c.seed, c.num_classes, c.motif_len)]

    def load(self) -> dict[str, SequenceDataset]:
        c = self.config
        if c.path is not None:
            root = Path(c.path).expanduser()
            classes = benchmark_classes(root, c.num_classes)
            splits = {
                split: read_benchmark(root / split, classes, c.max_len, c.truncate) for split in ("train", "test")
            }
        elif c.train_file is not None or c.test_file is not None:
            if c.train_file is None or c.test_file is None:
                raise ConfigError("task 'genomics': CSV input needs both train_file and test_file")
            read = lambda name: read_csv(Path(name).expanduser(), c.num_classes, c.max_len, c.truncate)
            splits = {"train": read(c.train_file), "test": read(c.test_file)}
            if c.val_file is not None:
                splits["val"] = read(c.val_file)
        else:
            generated = generated_splits(self, VERSION)
            splits = {split: SequenceDataset(a["tokens"], a["label"]) for split, a in generated.items()}
        if "val" not in splits:
            splits["train"], splits["val"] = hold_out(splits["train"], c.val_fraction, c.seed)
        if c.reverse_complement:
            splits["train"] = with_reverse_complements(splits["train"])
        return splits

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n generated sequences: token ids (n, max_len) uint8 and labels (n,)."""
        c = self.config
        return plant_motifs(rng, n, motifs(c.seed, c.num_classes, c.motif_len), c.max_len, c.motif_copies)


def hold_out(data: SequenceDataset, fraction: float, seed: int) -> tuple[SequenceDataset, SequenceDataset]:
    """(train, val): a seeded random `fraction` of `data` held out as validation."""
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, round(fraction * len(data)))
    if n_val >= len(data):
        raise ConfigError(f"task 'genomics': {len(data)} training sequences are too few to hold out validation")
    pick = lambda idx: SequenceDataset([data.tokens[i] for i in idx], data.targets[idx], shift=data.shift)
    return pick(np.sort(order[n_val:])), pick(np.sort(order[:n_val]))


def encode(text: str, where: str) -> np.ndarray:
    """A DNA string as token ids (uint8), or one ConfigError line naming `where` and the column
    of the first letter that is not A, C, G, T or N (either case)."""
    raw = text.encode("utf-8")
    ids = _IDS[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(ids == 0)
    if len(bad):
        column_ = len(raw[: bad[0]].decode("utf-8", errors="ignore")) + 1
        letter = raw[bad[0] :].decode("utf-8", errors="replace")[0]
        raise ConfigError(f"{where}: {letter!r} (column {column_}) is not a base; expected A, C, G, T or N (any case)")
    return ids


def reverse_complement(ids: np.ndarray) -> np.ndarray:
    """The other strand of a sequence of token ids, read 5' to 3'."""
    return COMPLEMENT[np.asarray(ids)[::-1]]


def with_reverse_complements(data: SequenceDataset) -> SequenceDataset:
    """`data` followed by the reverse complement of each of its sequences, labels kept."""
    tokens = list(data.tokens) + [reverse_complement(row) for row in data.tokens]
    return SequenceDataset(tokens, np.concatenate([data.targets, data.targets]), shift=data.shift)


def benchmark_classes(root: Path, num_classes: int) -> list[str]:
    """A Genomic Benchmarks dataset's class names: the folders under train/, sorted, which
    test/ must repeat; their count must be num_classes."""
    train, test = root / "train", root / "test"
    for folder in (train, test):
        if not folder.is_dir():
            raise ConfigError(f"genomics: {root} is not a Genomic Benchmarks folder: no {folder.name}/ in it")
    try:
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        in_test = sorted(p.name for p in test.iterdir() if p.is_dir())
    except OSError as err:
        raise ConfigError(f"genomics: cannot list {root} ({err.strerror})") from None
    if classes != in_test:
        raise ConfigError(f"genomics: {train} has class folders {classes} but {test} has {in_test}")
    if len(classes) != num_classes:
        raise ConfigError(
            f"genomics: {train} has {len(classes)} class folders ({', '.join(classes)}); "
            f"set task.num_classes={len(classes)}"
        )
    return classes


def read_benchmark(folder: Path, classes: list[str], max_len: int, truncate: bool) -> SequenceDataset:
    """One split of a Genomic Benchmarks dataset: <folder>/<class>/*.txt, one sequence per file."""
    tokens, labels, truncated = [], [], 0
    for label, name in enumerate(classes):
        files = sorted((folder / name).glob("*.txt"))
        if not files:
            raise ConfigError(f"genomics: no .txt sequences in {folder / name}")
        for path in files:
            lineno, text = read_one_sequence(path)
            where = f"{path}:{lineno}"
            ids = encode(text, where)
            fitted = fit_length(ids, max_len, truncate, where)
            truncated += len(fitted) < len(ids)
            tokens.append(fitted)
            labels.append(label)
    log_truncated(truncated, len(tokens), max_len, folder)
    return SequenceDataset(tokens, np.array(labels, dtype=np.int64))


def read_one_sequence(path: Path) -> tuple[int, str]:
    """(line number, sequence) of a file that holds one sequence on one line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    filled = [(i, line.strip()) for i, line in enumerate(lines, start=1) if line.strip()]
    if not filled:
        raise ConfigError(f"{path}:1: empty; expected one DNA sequence")
    if len(filled) > 1:
        raise ConfigError(f"{path}:{filled[1][0]}: a second line; expected one sequence per file")
    return filled[0]


def read_csv(path: Path, num_classes: int, max_len: int, truncate: bool) -> SequenceDataset:
    """A CSV file whose header names a sequence and a label column, as token ids and labels."""
    if not path.is_file():
        raise ConfigError(f"genomics: missing file {path}")
    tokens, labels, truncated = [], [], 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is not a column name
            reader = csv.reader(f)
            header = [name.strip().lower() for name in next(reader, [])]
            seq_col, label_col = column(header, SEQUENCE_COLUMNS), column(header, LABEL_COLUMNS)
            if seq_col is None or label_col is None:
                raise ConfigError(f"{path}:1: expected a header naming sequence (or seq) and label, got {header!r}")
            for row in reader:
                if not row:
                    continue  # a blank line
                where = f"{path}:{reader.line_num}"
                if len(row) != len(header):
                    raise ConfigError(f"{where}: expected {len(header)} comma-separated fields, got {len(row)}")
                label = parse_label(row[label_col])
                if label is None or not 0 <= label < num_classes:
                    raise ConfigError(
                        f"{where}: label {row[label_col][:20]!r} is not an integer in 0..{num_classes - 1}"
                    )
                if not row[seq_col].strip():
                    raise ConfigError(f"{where}: the sequence is empty")
                ids = encode(row[seq_col].strip(), where)
                fitted = fit_length(ids, max_len, truncate, where)
                truncated += len(fitted) < len(ids)
                tokens.append(fitted)
                labels.append(label)
    except csv.Error as err:
        raise ConfigError(f"{path}:{reader.line_num}: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    if not tokens:
        raise ConfigError(f"{path}: no examples")
    log_truncated(truncated, len(tokens), max_len, path)
    return SequenceDataset(tokens, np.array(labels, dtype=np.int64))


def motifs(seed: int, count: int, length: int) -> np.ndarray:
    """(count, length) token ids of A/C/G/T: the generated task's motifs, one per class, drawn
    from the seed so that no motif equals another or another's reverse complement."""
    rng = np.random.default_rng([seed, 0x5EED])  # apart from the examples' stream
    chosen: list[np.ndarray] = []
    seen: set[bytes] = set()
    while len(chosen) < count:
        motif = rng.integers(1, 5, length).astype(np.uint8)
        if motif.tobytes() in seen or reverse_complement(motif).tobytes() in seen:
            continue
        chosen.append(motif)
        seen.update((motif.tobytes(), reverse_complement(motif).tobytes()))
    return np.stack(chosen)


def plant_motifs(
    rng: np.random.Generator, n: int, table: np.ndarray, length: int, copies: int
) -> dict[str, np.ndarray]:
    """n sequences of uniform random bases, each with `copies` copies of its label's motif, one
    at a random place in each of `copies` equal stretches, and no other label's motif on either
    strand (such draws are drawn again)."""
    count, m = table.shape
    tokens = np.zeros((n, length), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    for _ in range(100):
        if not len(todo):
            return {"tokens": tokens, "label": labels}
        k = len(todo)
        rows = rng.integers(1, 5, (k, length)).astype(np.uint8)
        label = rng.integers(0, count, k)
        stretch = length // copies
        for copy in range(copies):
            start = copy * stretch + rng.integers(0, stretch - m + 1, k)
            rows[np.arange(k)[:, None], start[:, None] + np.arange(m)] = table[label]
        ok = ~(occurrences(rows, table) & (np.arange(count) != label[:, None])).any(1)
        tokens[todo[ok]], labels[todo[ok]] = rows[ok], label[ok]
        todo = todo[~ok]
    raise ConfigError(
        f"task 'genomics': random sequences of {length} bases nearly always hold some {m}-base motif; "
        "lengthen motif_len or shorten max_len"
    )


def occurrences(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(n, count) bool: whether each motif of `table` occurs in each row, on either strand."""
    m = table.shape[1]
    place = 5 ** np.arange(m, dtype=np.int64)  # a window of token ids 0..5 as one base-5 number
    codes = np.lib.stride_tricks.sliding_window_view(rows, m, axis=1).astype(np.int64) @ place  # (n, w)
    found = np.zeros((len(rows), len(table)), dtype=bool)
    for k, motif in enumerate(table):
        found[:, k] = np.isin(
            codes, [motif.astype(np.int64) @ place, reverse_complement(motif).astype(np.int64) @ place]
        ).any(1)
    return found


def kmer_counts(data: SequenceDataset, k: int) -> np.ndarray:
    """(n, 4**k) float32: how often each k-mer of A/C/G/T occurs in each sequence (a window
    holding an N is not counted); k-mer `code` spells its bases in base 4, A=0 C=1 G=2 T=3,
    the first base most significant."""
    place = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)
    counts = np.zeros((len(data), 4**k), dtype=np.float32)
    for i, row in enumerate(data.tokens):
        ids = np.asarray(row, dtype=np.int64) + data.shift
        if len(ids) < k:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(ids, k)  # (w, k)
        clean = (windows <= 4).all(1)  # no N
        np.add.at(counts[i], (windows[clean] - 1) @ place, 1)
    return counts


def kmer_baseline(task: GenomicsTask, k: int = 4, l2: float = 1e-3, steps: int = 200) -> dict[str, float]:
    """Accuracy of multinomial logistic regression on k-mer counts (the classical baseline of
    sequence classification), fit on train (standardised counts, L2 `l2`, L-BFGS).

    Returns:
        {"val/acc": ..., "test/acc": ...}
    """
    task.setup()
    features = {split: torch.from_numpy(kmer_counts(task.splits[split], k)) for split in SPLITS}
    labels = {split: torch.from_numpy(np.asarray(task.splits[split].targets)) for split in SPLITS}
    mean, std = features["train"].mean(0), features["train"].std(0).clamp(min=1e-6)
    scaled = {split: (x - mean) / std for split, x in features.items()}
    torch.manual_seed(task.config.seed)
    model = torch.nn.Linear(4**k, task.num_classes)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(model(scaled["train"]), labels["train"])
        value = value + l2 * model.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        return {
            f"{split}/acc": float((model(scaled[split]).argmax(1) == labels[split]).float().mean())
            for split in ("val", "test")
        }
