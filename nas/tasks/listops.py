"""ListOps (Nangia & Bowman 2018, https://arxiv.org/abs/1804.06028) as in the Long Range Arena
(Tay et al. 2021, https://arxiv.org/abs/2011.04006): a reader for LRA's TSV files and a
generator that follows LRA's sampling scheme and writes the same files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nas.atomic import atomic_write
from nas.errors import ConfigError
from nas.tasks.base import SPLITS, TASKS, GeneratedConfig, SequenceDataset, Task, check, fit_length, log_truncated
from nas.tasks.cache import cache_dir

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
DIGITS = tuple("0123456789")
PARENS = ("(", ")")
# LRA's released pipeline split on non-alphanumerics, which also dropped the brackets; its
# maintainers call them required (google-research/long-range-arena issue 14), so we keep the
# operators and "]" as tokens and drop only the parentheses, as later ports (S4) do.
VOCAB = {tok: i + 1 for i, tok in enumerate((*OPERATORS, END, *DIGITS))}  # 0 is padding
VALUE_P = 0.25  # LRA: chance that a node shallower than max_depth is an operator
VERSION = 1  # bump when generated data changes, so that old caches are not reused


@dataclasses.dataclass(frozen=True)
class ListOpsConfig(GeneratedConfig):
    """ListOps's options (`task.*`). Generates its data by default. LRA's released files instead:
    `task.path=/data/lra_release/listops-1000 task.max_len=2000`; LRA's generator settings
    (sequences of 500-2000 tokens; add num_train=96000 for its size):
    `task.longer_than=500 task.shorter_than=2000 task.max_len=2000`."""

    path: str | None = None  # folder with LRA's <prefix>_{train,val,test}.tsv; None: generate
    prefix: str = "basic"  # file-name prefix (LRA's generator --task flag)
    max_len: int = 256  # longest sequence the model takes, in tokens (LRA: 2000)
    truncate: bool = False  # cut longer sequences to max_len (and log it) instead of stopping
    max_depth: int = 10  # deepest operator nesting (LRA: 10)
    max_args: int = 10  # most arguments of one operator (LRA: 10)
    longer_than: int = 64  # generated lengths are > longer_than (LRA: 500) ...
    shorter_than: int = 256  # ... and < shorter_than, counted without parentheses (LRA: 2000)

    def __post_init__(self):
        super().__post_init__()
        check(self.max_len >= 1, f"max_len must be >= 1, got {self.max_len}")
        check(self.max_depth >= 2, f"max_depth must be >= 2, got {self.max_depth}")
        check(self.max_args >= 2, f"max_args must be >= 2, got {self.max_args}")
        check(
            0 <= self.longer_than < self.shorter_than - 1,
            f"need 0 <= longer_than < shorter_than - 1, got {self.longer_than}, {self.shorter_than}",
        )
        check(
            self.path is not None or self.truncate or self.shorter_than - 1 <= self.max_len,
            f"shorter_than {self.shorter_than} allows {self.shorter_than - 1} tokens, more than "
            f"max_len {self.max_len}; raise max_len or lower shorter_than",
        )


@TASKS.register("listops")
class ListOpsTask(Task):
    """The value (0-9) of a nested MIN / MAX / MED / SM (sum mod 10) expression.

    Reads LRA's files from `path`, or generates its own into the data dir. Tokens: the four
    operators, "]" and the ten digits (parentheses dropped); one label per sequence.
    """

    Config = ListOpsConfig

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = len(VOCAB) + 1
        self.num_classes = 10
        self.seq_len = self.config.max_len

    def describe(self) -> dict:
        # Parentheses are dropped as in load(); the answer is the value 0-9.
        return {
            **super().describe(),
            "input": "listops",
            "tokens": dict(VOCAB),
            "ignored": list(PARENS),
            "classes": list(DIGITS),
        }

    def load(self) -> dict[str, SequenceDataset]:
        c = self.config
        folder = Path(c.path).expanduser() if c.path is not None else self.generate()
        return {split: read_tsv(folder / f"{c.prefix}_{split}.tsv", c.max_len, c.truncate) for split in SPLITS}

    def generate(self) -> Path:
        """Write generated TSV files (once per parameter set) and return their folder."""
        c = self.config
        params = {
            "version": VERSION,
            "seed": c.seed,
            "num_train": c.num_train,
            "num_val": c.num_val,
            "num_test": c.num_test,
            "max_depth": c.max_depth,
            "max_args": c.max_args,
            "longer_than": c.longer_than,
            "shorter_than": c.shorter_than,
        }
        folder = cache_dir(self.data_dir, self.name, params)
        paths = [folder / f"{c.prefix}_{split}.tsv" for split in SPLITS]
        if all(p.exists() for p in paths):
            return folder
        rows = generate(
            c.num_train + c.num_val + c.num_test,
            c.max_depth,
            c.max_args,
            c.longer_than,
            c.shorter_than,
            np.random.default_rng(c.seed),
        )
        cuts = np.cumsum([0, c.num_train, c.num_val, c.num_test])
        for path, lo, hi in zip(paths, cuts[:-1], cuts[1:]):
            atomic_write(path, lambda f, part=rows[lo:hi]: f.write(tsv_bytes(part)))
        return folder


def evaluate(tokens: list[str]) -> int:
    """The value of an expression given as tokens; parentheses, if present, are skipped."""
    stack: list[list] = [[]]  # open operators as [name, args...]; the bottom collects the result
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            if len(stack) < 2 or len(stack[-1]) < 2:
                raise ValueError("']' closes no operator with arguments")
            name, *args = stack.pop()
            stack[-1].append(apply(OPERATORS.index(name), args))
        elif tok in DIGITS:
            stack[-1].append(int(tok))
        elif tok not in PARENS:
            raise ValueError(f"unknown token {tok!r}")
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError("not one complete expression")
    return stack[0][0]


def apply(op: int, args: list[int]) -> int:
    """Operator `op` (an index into OPERATORS) applied as LRA does (MED: floor of the median)."""
    if op == 0:
        return min(args)
    if op == 1:
        return max(args)
    if op == 2:
        s = sorted(args)
        return (s[(len(s) - 1) // 2] + s[len(s) // 2]) // 2
    return sum(args) % 10


def read_tsv(path: Path, max_len: int, truncate: bool) -> SequenceDataset:
    """An LRA ListOps TSV file (header Source / Target) as token ids and labels."""
    if not path.is_file():
        raise ConfigError(f"listops: missing file {path}")
    try:
        return parse_tsv(path, max_len, truncate)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    except OSError as err:  # e.g. no read permission
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None


def parse_tsv(path: Path, max_len: int, truncate: bool) -> SequenceDataset:
    rows, labels, truncated = [], [], 0
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is not a column name
        header = f.readline().rstrip("\r\n").split("\t")
        if "Source" not in header or "Target" not in header:
            raise ConfigError(f"{path}:1: expected a header naming Source and Target, got {header!r}")
        source, target = header.index("Source"), header.index("Target")
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if fields == [""]:
                continue  # a blank line, e.g. a trailing one
            if len(fields) != len(header):
                raise ConfigError(f"{path}:{lineno}: expected {len(header)} tab-separated fields, got {len(fields)}")
            try:  # map() and str.replace keep this fast on LRA's 96,000 long rows
                ids = list(map(VOCAB.__getitem__, fields[source].replace("(", "").replace(")", "").split()))
            except KeyError as err:
                raise ConfigError(
                    f"{path}:{lineno}: unknown token {err.args[0]!r}; expected ( ) ] {' '.join(OPERATORS)} or a digit"
                ) from None
            label = fields[target].strip()
            if not ids or label not in DIGITS:
                raise ConfigError(
                    f"{path}:{lineno}: expected an expression and a label 0-9, "
                    f"got {len(ids)} tokens and label {label!r}"
                )
            tokens = fit_length(np.array(ids, dtype=np.uint8), max_len, truncate, f"{path}:{lineno}")
            truncated += len(tokens) < len(ids)
            rows.append(tokens)
            labels.append(int(label))
    if not rows:
        raise ConfigError(f"{path}: no examples")
    log_truncated(truncated, len(rows), max_len, path)
    return SequenceDataset(rows, np.array(labels, dtype=np.int64))


def tsv_bytes(rows: list[tuple[str, int]]) -> bytes:
    """Rows in LRA's file format: what its csv.writer(delimiter='\\t') writes, CRLF included."""
    lines = ["Source\tTarget"] + [f"{text}\t{value}" for text, value in rows]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def generate(
    count: int,
    max_depth: int,
    max_args: int,
    longer_than: int,
    shorter_than: int,
    rng: np.random.Generator,
    batch: int = 1 << 15,
) -> list[tuple[str, int]]:
    """`count` distinct (expression text, value) pairs, sampled as LRA's generator does.

    LRA draws trees until enough have longer_than < length < shorter_than (length counts operator,
    "]" and digit tokens) and keeps distinct ones; we draw the same trees a batch at a time.
    """
    found: dict[str, int] = {}
    idle = 0
    while len(found) < count:
        before = len(found)
        texts, values = sample_trees(batch, max_depth, max_args, longer_than, shorter_than, rng)
        for text, value in zip(texts, values.tolist()):
            found.setdefault(text, value)
            if len(found) == count:
                break
        idle = idle + 1 if len(found) == before else 0
        if idle == 20:
            raise ConfigError(
                f"listops: found only {len(found)} distinct expressions of the "
                f"{count} asked for; widen longer_than..shorter_than or the tree"
            )
    return list(found.items())


def sample_trees(
    n: int, max_depth: int, max_args: int, longer_than: int, shorter_than: int, rng: np.random.Generator
) -> tuple[list[str], np.ndarray]:
    """Draw n trees with LRA's scheme, all at once; return texts and values of those in range.

    A node at depth < max_depth is an operator with chance VALUE_P, with 2..max_args children
    and a uniform operator; otherwise it is a uniform digit. Trees are grown a level at a time,
    and one that is already too long stops growing (it would be rejected anyway).
    """
    levels = []  # per depth: (tree id, parent index in the level above, child count, code)
    tree, parent = np.arange(n), np.full(n, -1)
    length = np.zeros(n, dtype=np.int64)
    for depth in range(1, max_depth + 1):
        m = len(tree)
        is_op = rng.random(m) <= VALUE_P if depth < max_depth else np.zeros(m, dtype=bool)
        k = np.where(is_op, rng.integers(2, max_args + 1, m), 0)
        code = np.where(is_op, rng.integers(0, len(OPERATORS), m), rng.integers(0, 10, m))
        length += np.bincount(tree, weights=np.where(is_op, 2, 1), minlength=n).astype(np.int64)
        levels.append((tree, parent, k, code))
        growing = np.flatnonzero(is_op & (length[tree] < shorter_than))
        parent = np.repeat(growing, k[growing])
        tree = tree[parent]
        if not len(tree):
            break
    ok = (length > longer_than) & (length < shorter_than)
    kept = keep_trees(levels, ok)
    values, sizes = evaluate_levels(kept)
    return render(kept, sizes), values[0]


def keep_trees(levels: list, ok: np.ndarray) -> list:
    """The levels restricted to trees with `ok`, parent indices renumbered to match."""
    kept, keep_above = [], None
    for tree, parent, k, code in levels:
        keep = ok[tree]
        parent = parent[keep]
        if keep_above is not None:
            parent = (np.cumsum(keep_above) - 1)[parent]
        kept.append((tree[keep], parent, k[keep], code[keep]))
        keep_above = keep
    return kept


def child_blocks(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Operators' child counts and where each one's children start in the level below.

    Children are stored grouped by parent, in parent order, so each operator's children are
    one contiguous block.
    """
    ops = np.flatnonzero(k > 0)
    counts = k[ops]
    return ops, np.cumsum(counts) - counts


def evaluate_levels(kept: list) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bottom-up: each node's value, and its size in text tokens (with parentheses)."""
    values, sizes = [None] * len(kept), [None] * len(kept)
    for d in reversed(range(len(kept))):
        _, _, k, code = kept[d]
        value, size = code.copy(), np.ones(len(k), dtype=np.int64)
        ops, starts = child_blocks(k)
        if len(ops):
            child, kk = values[d + 1], k[ops]
            value[ops] = np.choose(
                code[ops],
                [
                    np.minimum.reduceat(child, starts),
                    np.maximum.reduceat(child, starts),
                    block_median(child, kk),
                    np.add.reduceat(child, starts) % 10,
                ],
            )
            # "( " * (k + 1), the operator, each child and its ")", then "] )"
            size[ops] = 2 * kk + 4 + np.add.reduceat(sizes[d + 1], starts)
        values[d], sizes[d] = value, size
    return values, sizes


def block_median(digits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Floor of the median of each consecutive block of `counts` digits, from digit histograms."""
    block = np.repeat(np.arange(len(counts)), counts)
    cum = np.bincount(block * 10 + digits, minlength=10 * len(counts)).reshape(-1, 10).cumsum(1)
    # the i-th smallest digit (from 0) is the number of digits whose cumulative count is <= i
    low = (cum <= ((counts - 1) // 2)[:, None]).sum(1)
    high = (cum <= (counts // 2)[:, None]).sum(1)
    return (low + high) // 2


STRINGS = ("(", ")", END, *OPERATORS, *DIGITS)  # text-token codes 0..16
OPEN, CLOSE, CLOSE_OP, FIRST_OP, FIRST_DIGIT = 0, 1, 2, 3, 3 + len(OPERATORS)


def render(kept: list, sizes: list[np.ndarray]) -> list[str]:
    """Top-down: place every node's text tokens in one array, then cut it into strings."""
    offsets = [np.cumsum(sizes[0]) - sizes[0]]  # where each node's text starts
    for d in range(len(kept) - 1):
        ops, starts = child_blocks(kept[d][2])
        if not len(ops):
            break
        step = sizes[d + 1] + 1  # a child and the ")" after it
        before = np.cumsum(step) - step
        parent = kept[d + 1][1]
        first = offsets[d][parent] + kept[d][2][parent] + 2  # after the "( "s and the operator
        offsets.append(first + before - np.repeat(before[starts], kept[d][2][ops]))
    codes = np.full(int(sizes[0].sum()), -1, dtype=np.int64)
    for d, off in enumerate(offsets):
        _, _, k, code = kept[d]
        leaf = k == 0
        codes[off[leaf]] = FIRST_DIGIT + code[leaf]
        o, kk, size = off[~leaf], k[~leaf], sizes[d][~leaf]
        opens = kk + 1
        codes[np.repeat(o - np.cumsum(opens) + opens, opens) + np.arange(opens.sum())] = OPEN
        codes[o + kk + 1] = FIRST_OP + code[~leaf]
        codes[o + size - 2] = CLOSE_OP
        codes[o + size - 1] = CLOSE
        if d > 0:
            codes[off + sizes[d]] = CLOSE
    assert (codes >= 0).all(), "every text position is written once"
    return join_tokens(codes, np.cumsum(sizes[0]))


def join_tokens(codes: np.ndarray, ends: np.ndarray) -> list[str]:
    """Text tokens (codes into STRINGS) joined by spaces, cut after each index in `ends`."""
    chars = np.zeros((len(STRINGS), max(map(len, STRINGS))), dtype=np.uint8)
    for i, s in enumerate(STRINGS):
        chars[i, : len(s)] = np.frombuffer(s.encode(), dtype=np.uint8)
    lengths = np.array([len(s) + 1 for s in STRINGS])[codes]  # with the space after
    byte_ends = np.cumsum(lengths)
    starts = byte_ends - lengths
    raw = np.full(int(byte_ends[-1]) if len(codes) else 0, ord(" "), dtype=np.uint8)
    raw[starts] = chars[codes, 0]
    long = np.flatnonzero(lengths > 2)  # the operators, the only tokens of several characters
    for j in range(1, chars.shape[1]):
        has = long[lengths[long] > j + 1]
        raw[starts[has] + j] = chars[codes[has], j]
    raw, cuts = raw.tobytes(), byte_ends[ends - 1].tolist()
    return [raw[s : e - 1].decode("ascii") for s, e in zip([0] + cuts[:-1], cuts)]
