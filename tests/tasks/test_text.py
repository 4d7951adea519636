"""LRA Text from the user's files: TSV and JSONL, held-out validation, and bad input."""

import csv
import json
import logging

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.text import TextTask
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

REVIEWS = [
    'A film of rare "beauty",\twith tabs',
    "Dull.",
    "Café crème, très bien!",
    "multi\nline review",
    "I want my two hours back",
    "Loved every minute of it",
]


def write_tsv(path, rows, header=("text", "label")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def corpus(n: int, offset: int = 0):
    """n distinct (text, label) rows."""
    return [(f"{REVIEWS[i % len(REVIEWS)]} #{i + offset}", (i + offset) % 2) for i in range(n)]


def make(seed, data_dir, **overrides):
    folder = data_dir / "files"
    folder.mkdir(parents=True, exist_ok=True)
    options = dict(
        train_file=str(write_tsv(folder / "train.tsv", corpus(40))),
        test_file=str(write_tsv(folder / "test.tsv", corpus(10, offset=1000))),
        max_len=64,
        batch_size=8,
    )
    return TextTask(data_dir=data_dir, seed=seed, **{**options, **overrides})


def test_bytes_are_tokens_plus_one(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", [("Café", 1), ("ok", 0)])
    task = TextTask(data_dir=tmp_path, train_file=str(path), test_file=str(path), val_file=str(path))
    task.setup()
    tokens, label = task.splits["train"][0]
    assert tokens.tolist() == [b + 1 for b in "Café".encode()]  # 5 bytes: é is two
    assert label == 1


def test_tsv_quoting_and_jsonl_read_the_same(tmp_path):
    rows = corpus(12)
    tsv = write_tsv(tmp_path / "a.tsv", rows)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    read = lambda p: TextTask(data_dir=tmp_path, train_file=str(p), test_file=str(p), val_file=str(p), max_len=64)
    a, b = read(tsv), read(jsonl)
    a.setup()
    b.setup()
    assert [t.tolist() for t, _ in a.splits["test"]] == [t.tolist() for t, _ in b.splits["test"]]
    assert [t.tobytes().decode() for t in a.splits["test"].tokens] == [t for t, _ in rows]


def test_lra_column_names_are_accepted(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", [(0, "fine")], header=("Target", "Source"))
    task = TextTask(data_dir=tmp_path, train_file=str(path), test_file=str(path), val_file=str(path))
    task.setup()
    assert task.splits["train"].tokens[0].tobytes() == b"fine"


def test_shapes_vocabulary_and_labels(tmp_path):
    task = make(0, tmp_path)
    assert (task.vocab_size, task.num_classes, task.seq_len, task.readout) == (257, 2, 64, "classify")
    check_batches(task)


def test_validation_is_held_out_from_train(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    sizes = [len(task.splits[s]) for s in ("train", "val", "test")]
    assert sizes == [36, 4, 10]
    check_disjoint(task)
    texts = {bytes((tokens - 1).tolist()).decode() for s in ("train", "val") for tokens, _ in task.splits[s]}
    assert texts == {text for text, _ in corpus(40)}  # every review, as bytes + 1


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def test_baseline_is_the_majority_class(tmp_path):
    val = write_tsv(tmp_path / "val.tsv", [("x", 1)] * 3 + [("y", 0)])
    task = make(0, tmp_path, val_file=str(val))
    task.setup()
    train_majority = np.bincount(task.splits["train"].targets).argmax()
    assert train_majority == 0  # 20 of each label: ties go to the smaller label
    assert task.baseline()["val/acc"] == pytest.approx(0.25)


def test_long_texts_stop_or_truncate(tmp_path, caplog):
    path = write_tsv(tmp_path / "train.tsv", [("x" * 100, 0), ("short", 1)])
    with pytest.raises(
        ConfigError,
        match=f"{path}:2: sequence of 100 tokens is longer than max_len 64; raise max_len or set truncate=true",
    ):
        TextTask(train_file=str(path), test_file=str(path), max_len=64).setup()
    with caplog.at_level(logging.WARNING):
        task = TextTask(
            data_dir=tmp_path, train_file=str(path), test_file=str(path), val_file=str(path), max_len=64, truncate=True
        )
        task.setup()
    assert len(task.splits["train"].tokens[0]) == 64
    assert f"{path}: truncated 1 of 2 sequences to max_len 64 (truncate=true)" in caplog.text


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"text: missing file {tmp_path}/nope.tsv"):
        TextTask(train_file=str(tmp_path / "nope.tsv"), test_file="x.tsv").setup()
    with pytest.raises(ConfigError, match="set train_file and test_file"):
        TextTask().setup()


BAD_LABEL = "expected a text and an integer label in 0..1"
GOOD_JSON = '{"text": "ok", "label": 1}\n'


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("a.tsv", "text\tlabel\nfine\t1\nbroken row\n", ":3: expected 2 tab-separated fields, got 1"),
        ("a.tsv", "text\tlabel\nfine\t1\nnice\tpositive\n", ":3: " + BAD_LABEL),
        ("a.tsv", "text\tlabel\nfine\t1\nnice\t2\n", ":3: " + BAD_LABEL),
        ("a.tsv", "review\tstars\nfine\t1\n", ":1: expected a header naming a text column"),
        ("a.jsonl", GOOD_JSON + '{"text": "ok", "label": 1\n', ":2: not JSON"),
        ("a.jsonl", GOOD_JSON + '["ok", 1]\n', ":2: expected an object with text and label"),
        ("a.jsonl", GOOD_JSON + '{"text": "ok", "label": 0.5}\n', ":2: " + BAD_LABEL),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path) + problem):
        TextTask(train_file=str(path), test_file=str(path), val_file=str(path)).setup()


def test_not_utf8_and_wrong_suffix(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_bytes(b"text\tlabel\n\xff\xfe\t1\n")
    with pytest.raises(ConfigError, match=f"{path}: not UTF-8 text"):
        TextTask(train_file=str(path), test_file=str(path)).setup()
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("text,label\nfine,1\n")
    with pytest.raises(ConfigError, match=f"text: {csv_file} must end in .tsv or .jsonl"):
        TextTask(train_file=str(csv_file), test_file=str(path)).setup()
