"""ListOps: hand-checked values, LRA's real files, our generator's files, and bad input."""

import csv
import io
import logging

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.listops import VOCAB, ListOpsTask, evaluate, generate, read_tsv, tsv_bytes
from tests.tasks.task_checks import LRA_LISTOPS, check_batches, check_determinism, check_disjoint

TINY = dict(
    num_train=60,
    num_val=20,
    num_test=20,
    max_depth=6,
    max_args=4,
    longer_than=8,
    shorter_than=64,
    max_len=64,
    batch_size=8,
)
ID_TO_TOKEN = {i: tok for tok, i in VOCAB.items()}

HAND_CHECKED = [
    ("7", 7),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 3 [MAX 7 0 ] 1 ]", 1),
    ("[MED 1 2 3 4 ]", 2),  # median 2.5, floored as LRA's int(np.median)
    ("[MED 9 0 5 ]", 5),
    ("[MED 8 9 ]", 8),
    ("[SM 8 5 7 ]", 0),  # 20 mod 10
    ("[SM [MAX 9 1 ] [MED 4 6 ] ]", 4),  # 9 + 5 = 14
    ("[MIN [SM 5 6 ] [MAX 2 3 ] ]", 1),  # min(11 mod 10, 3)
    ("[MAX [MIN [MED 3 3 8 ] [SM 9 9 ] ] 2 ]", 3),  # max(min(3, 8), 2)
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),  # LRA's text form, with parentheses
    ("( ( ( ( [SM 4 ) ( ( ( [MIN 6 ) 2 ) ] ) ) 5 ) ] )", 1),  # 4 + 2 + 5 = 11
]

# Rows as LRA's generator writes them: tab-separated, CRLF, parentheses around every argument.
HAND_WRITTEN = (
    "Source\tTarget\r\n"
    "( ( ( [MAX 2 ) 9 ) ] )\t9\r\n"
    "( ( ( ( [SM 4 ) ( ( ( [MIN 6 ) 2 ) ] ) ) 5 ) ] )\t1\r\n"
    "( ( ( [MED 1 ) 2 ) ] )\t1\r\n"
)


def make(seed, data_dir, **overrides):
    return ListOpsTask(data_dir=data_dir, seed=seed, **{**TINY, **overrides})


def decode(ids) -> list[str]:
    return [ID_TO_TOKEN[int(i)] for i in ids]


@pytest.mark.parametrize("text, value", HAND_CHECKED)
def test_hand_checked_expressions(text, value):
    assert evaluate(text.split()) == value


def test_malformed_expressions_are_refused():
    for text in ("[MAX 1 2", "[MIN ]", "1 2", "[MAX 1 X ]"):
        with pytest.raises(ValueError):
            evaluate(text.split())


def test_reads_a_hand_written_lra_file(tmp_path):
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(HAND_WRITTEN.encode())
    data = read_tsv(path, max_len=64, truncate=False)
    assert [decode(t) for t in data.tokens] == [
        ["[MAX", "2", "9", "]"],
        ["[SM", "4", "[MIN", "6", "2", "]", "5", "]"],
        ["[MED", "1", "2", "]"],
    ]
    assert data.targets.tolist() == [9, 1, 1]


@pytest.mark.skipif(not LRA_LISTOPS.is_dir(), reason=f"no LRA ListOps sample at {LRA_LISTOPS}")
def test_reads_lra_files_and_agrees_with_their_labels():
    task = ListOpsTask(path=str(LRA_LISTOPS), max_len=2000, batch_size=16)
    task.setup()
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [200, 50, 50]
    for split in ("train", "val", "test"):
        data = task.splits[split]
        assert all(500 < len(t) < 2000 for t in data.tokens)  # LRA's length bounds
        assert [evaluate(decode(t)) for t in data.tokens] == data.targets.tolist()
    check_batches(task)
    check_disjoint(task)


@pytest.mark.skipif(not LRA_LISTOPS.is_dir(), reason=f"no LRA ListOps sample at {LRA_LISTOPS}")
def test_lra_files_longer_than_max_len_stop_or_truncate(caplog):
    with pytest.raises(
        ConfigError,
        match=r"basic_train.tsv:\d+: sequence of \d+ tokens is "
        r"longer than max_len 256; .*truncate=true",
    ):
        ListOpsTask(path=str(LRA_LISTOPS), max_len=256).setup()
    with caplog.at_level(logging.WARNING):
        task = ListOpsTask(path=str(LRA_LISTOPS), max_len=256, truncate=True)
        task.setup()
    assert max(len(t) for t in task.splits["train"].tokens) == 256
    assert "truncated 200 of 200 sequences to max_len 256" in caplog.text


def test_generated_files_read_back_with_right_labels_and_lengths(tmp_path):
    task = make(0, tmp_path, longer_than=20, shorter_than=60)
    task.setup()
    files = sorted(p.name for p in tmp_path.glob("listops/*/*.tsv"))
    assert files == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    head = next(tmp_path.glob("listops/*/basic_train.tsv")).read_bytes()
    assert head.startswith(b"Source\tTarget\r\n( ")
    for split in ("train", "val", "test"):
        data = task.splits[split]
        assert all(20 < len(t) < 60 for t in data.tokens)
        assert [evaluate(decode(t)) for t in data.tokens] == data.targets.tolist()


def test_generator_covers_every_label():
    rows = generate(400, 6, 5, 5, 100, np.random.default_rng(0))
    assert len({text for text, _ in rows}) == 400
    assert sorted({value for _, value in rows}) == list(range(10))


def test_shapes_vocabulary_and_labels(tmp_path):
    task = make(0, tmp_path)
    assert (task.vocab_size, task.num_classes, task.seq_len, task.readout) == (16, 10, 64, "classify")
    check_batches(task)


def test_splits_are_disjoint(tmp_path):
    check_disjoint(make(0, tmp_path))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def test_changed_parameters_regenerate(tmp_path):
    make(0, tmp_path).setup()
    make(0, tmp_path, max_depth=5).setup()
    assert len(list(tmp_path.glob("listops/*/basic_train.tsv"))) == 2


def test_baseline_is_the_majority_class(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    majority = np.bincount(task.splits["train"].targets).argmax()
    expected = float(np.mean(task.splits["val"].targets == majority))
    assert task.baseline()["val/acc"] == pytest.approx(expected)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"listops: missing file {tmp_path}/basic_train.tsv"):
        ListOpsTask(path=str(tmp_path)).setup()


@pytest.mark.parametrize(
    "row, problem",
    [
        ("( ( [MAX 2 ) 9 ) ] )", "expected 2 tab-separated fields, got 1"),
        ("( ( [MAX 2 ) 9 ) ] )\t9\textra", "expected 2 tab-separated fields, got 3"),
        ("( ( [MAX 2 ) 9 ) ] )\tten", "expected an expression and a label 0-9"),
        ("( ( [MAX 2 ) 9 ) ] )\t12", "expected an expression and a label 0-9"),
        ("( ( [MAXX 2 ) 9 ) ] )\t9", "unknown token '\\[MAXX'"),
        ("\t3", "expected an expression and a label 0-9, got 0 tokens"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, row, problem):
    path = tmp_path / "basic_train.tsv"
    path.write_text(HAND_WRITTEN + row + "\r\n")
    with pytest.raises(ConfigError, match=f"{path}:5: {problem}"):
        read_tsv(path, max_len=64, truncate=False)


def test_bad_header_and_empty_file(tmp_path):
    path = tmp_path / "basic_train.tsv"
    path.write_text("Input\tLabel\n[MAX 1 2 ]\t2\n")
    with pytest.raises(ConfigError, match=f"{path}:1: expected a header naming Source and Target"):
        read_tsv(path, max_len=64, truncate=False)
    path.write_text("Source\tTarget\r\n")
    with pytest.raises(ConfigError, match=f"{path}: no examples"):
        read_tsv(path, max_len=64, truncate=False)


def test_generator_longer_than_max_len_is_refused():
    with pytest.raises(ConfigError, match="shorter_than 2000 allows 1999 tokens, more than max_len 256"):
        ListOpsTask(shorter_than=2000)


def test_generated_files_are_byte_for_byte_what_lras_writer_writes():
    rows = generate(20, 5, 4, 3, 40, np.random.default_rng(0))
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t")  # as lra_benchmarks/data/listops.py writes
    writer.writerow(["Source", "Target"])
    writer.writerows(rows)
    assert tsv_bytes(rows) == out.getvalue().encode()
