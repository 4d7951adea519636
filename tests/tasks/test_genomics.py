"""DNA classification: the generated motif task (labels checked by a plain string search),
Genomic Benchmarks folders and CSV files written here in their published layout, reverse
complements, the k-mer baseline, and one-line errors naming file:line."""

import csv
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

from nas.errors import ConfigError
from nas.tasks import build_task
from nas.tasks.base import SequenceDataset
from nas.tasks.genomics import GenomicsTask, kmer_baseline, kmer_counts, motifs
from tests.tasks.exported import export_task_model, folder_script
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

SMALL = dict(num_train=200, num_val=40, num_test=40, max_len=48, batch_size=16)
LETTERS = "-ACGTN"  # by token id


def text_of(ids) -> str:
    return "".join(LETTERS[i] for i in np.asarray(ids))


def other_strand(seq: str) -> str:
    """The reverse complement, spelled out by hand."""
    return seq[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


def make(seed=0, data_dir=None, **options):
    return GenomicsTask(data_dir=data_dir, seed=seed, **{**SMALL, **options})


def test_generated_label_is_the_one_motif_present_on_either_strand(tmp_path):
    task = make(data_dir=tmp_path)
    task.setup()
    table = [text_of(m) for m in motifs(0, task.num_classes, task.config.motif_len)]
    assert len(set(table) | {other_strand(m) for m in table}) == 2 * len(table)  # distinct on both strands
    for split in ("train", "val", "test"):
        for ids, label in task.splits[split]:
            seq = text_of(ids)
            assert len(seq) == 48 and set(seq) <= set("ACGT")
            present = [k for k, m in enumerate(table) if m in seq or other_strand(m) in seq]
            assert present == [label]
            assert all(table[label] in seq[i * 16 : (i + 1) * 16] for i in range(3))  # a copy in each third


def test_generated_contract(tmp_path):
    task = make(data_dir=tmp_path)
    assert (task.vocab_size, task.num_classes, task.seq_len, task.readout) == (6, 4, 48, "classify")
    assert task.describe()["classes"] == [text_of(m) for m in motifs(0, 4, 6)]  # each class named by its motif
    check_batches(task)
    check_disjoint(task)
    check_determinism(lambda seed, folder: make(seed, folder), tmp_path)
    assert np.bincount(task.splits["train"].targets).min() > 30  # every class drawn
    assert task.baseline()["test/acc"] < 0.5  # majority of 4 balanced classes


def test_reverse_complement_doubles_train_only(tmp_path):
    plain, doubled = make(data_dir=tmp_path), make(data_dir=tmp_path, reverse_complement=True)
    plain.setup()
    doubled.setup()
    n = len(plain.splits["train"])
    assert len(doubled.splits["train"]) == 2 * n
    for i in range(n):
        (a, y), (b, y2), (c, y3) = plain.splits["train"][i], doubled.splits["train"][i], doubled.splits["train"][n + i]
        assert text_of(b) == text_of(a) and text_of(c) == other_strand(text_of(a)) and y == y2 == y3
    for split in ("val", "test"):
        assert [text_of(t) for t, _ in plain.splits[split]] == [text_of(t) for t, _ in doubled.splits[split]]


def write_benchmark(root, splits: dict[str, dict[str, list[str]]]):
    """Genomic Benchmarks' layout: <root>/<split>/<class>/<id>.txt, one sequence per file."""
    for split, classes in splits.items():
        for name, sequences in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, seq in enumerate(sequences):
                (root / split / name / f"{i}.txt").write_text(seq + "\n")
    return root


BENCH = {
    "train": {
        "positive": ["ACGTACGTAC", "acgtnnacgt", "GGGGCCCCAA", "TTTTAAAAGG", "ACACACACAC"],
        "negative": ["CCCCCCCCCC", "GATTACAGAT", "ATATATATAT", "GCGCGCGCGC", "NNNNACGTAC"],
    },
    "test": {"positive": ["ACGTTGCA"], "negative": ["TTGGCCAA", "CAGT"]},
}


def test_reads_genomic_benchmarks_folders(tmp_path):
    root = write_benchmark(tmp_path / "demo", BENCH)
    task = GenomicsTask(data_dir=tmp_path, path=str(root), num_classes=2, max_len=16, val_fraction=0.2)
    task.setup()
    assert task.describe()["classes"] == ["negative", "positive"]  # sorted folder names
    test = sorted((text_of(t), int(y)) for t, y in task.splits["test"])
    assert test == [("ACGTTGCA", 1), ("CAGT", 0), ("TTGGCCAA", 0)]
    train = {text_of(t): int(y) for split in ("train", "val") for t, y in task.splits[split]}
    assert train["ACGTNNACGT"] == 1 and train["NNNNACGTAC"] == 0  # lowercase and N read
    assert len(task.splits["val"]) == 2 and len(train) == 10  # 20% held out, nothing lost
    again = GenomicsTask(data_dir=tmp_path, path=str(root), num_classes=2, max_len=16, val_fraction=0.2)
    again.setup()
    assert [text_of(t) for t, _ in again.splits["val"]] == [text_of(t) for t, _ in task.splits["val"]]
    check_batches(task)


def test_benchmark_errors_are_one_line(tmp_path):
    root = write_benchmark(tmp_path / "demo", BENCH)
    build = lambda **o: GenomicsTask(data_dir=tmp_path, path=str(root), max_len=16, **{"num_classes": 2, **o})
    with pytest.raises(ConfigError, match=r"has 2 class folders \(negative, positive\); set task.num_classes=2"):
        build(num_classes=3).setup()
    bad = root / "train" / "positive" / "9.txt"
    bad.write_text("ACGTXACG\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}:1: 'X' (column 5) is not a base")):
        build().setup()
    bad.write_text("\n\nACGT\nACGT\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}:4: a second line")):
        build().setup()
    bad.write_text("  \n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}:1: empty")):
        build().setup()
    bad.write_text("ACGT" * 5)
    with pytest.raises(ConfigError, match=re.escape(f"{bad}:1: sequence of 20 tokens is longer than max_len 16")):
        build().setup()
    bad.unlink()
    (root / "test" / "other").mkdir()
    with pytest.raises(ConfigError, match="has class folders"):
        build().setup()


def write_csv(path, rows, header=("sequence", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_reads_sequence_label_csv(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("ACGT" * (i % 3 + 1), i % 2) for i in range(20)])
    test = write_csv(tmp_path / "test.csv", [(1, "gattaca"), (0, "CCN")], header=("label", "seq"))
    task = GenomicsTask(data_dir=tmp_path, train_file=str(train), test_file=str(test), num_classes=2, max_len=32)
    task.setup()
    assert [(text_of(t), int(y)) for t, y in task.splits["test"]] == [("GATTACA", 1), ("CCN", 0)]
    assert len(task.splits["train"]) + len(task.splits["val"]) == 20
    record = build_task(task.record(), tmp_path, "record")
    assert record.config == task.config


@pytest.mark.parametrize(
    "row,message",
    [
        (("ACGU", "1"), ":3: 'U' (column 4) is not a base"),
        (("ACGT", "2"), ":3: label '2' is not an integer in 0..1"),
        (("ACGT", "yes"), ":3: label 'yes' is not an integer"),
        (("", "1"), ":3: the sequence is empty"),
        (("ACGT", "1", "extra"), ":3: expected 2 comma-separated fields, got 3"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, row, message):
    path = write_csv(tmp_path / "train.csv", [("ACGT", "0"), row])
    task = GenomicsTask(data_dir=tmp_path, train_file=str(path), test_file=str(path), num_classes=2)
    with pytest.raises(ConfigError, match=re.escape(f"{path}{message}")) as err:
        task.setup()
    assert "\n" not in str(err.value)


def test_csv_header_and_options_are_checked(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("ACGT", 0)], header=("dna", "label"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:1: expected a header naming sequence")):
        GenomicsTask(data_dir=tmp_path, train_file=str(path), test_file=str(path)).setup()
    with pytest.raises(ConfigError, match="not both"):
        GenomicsTask(data_dir=tmp_path, train_file=str(path), path=str(tmp_path))
    with pytest.raises(ConfigError, match="needs both train_file and test_file"):
        GenomicsTask(data_dir=tmp_path, train_file=str(path)).setup()
    with pytest.raises(ConfigError, match="motif_len must be in 2..27"):
        GenomicsTask(data_dir=tmp_path, motif_len=40, max_len=128)
    with pytest.raises(ConfigError, match=r"motif_copies must be in 1..10 \(max_len // motif_len\), got 11"):
        GenomicsTask(data_dir=tmp_path, motif_copies=11)


def test_kmer_counts_match_a_plain_count():
    rows = ["ACGTACGN", "AAAA", "GA"]
    data = SequenceDataset([np.array(["-ACGTN".index(c) for c in r], dtype=np.uint8) for r in rows], np.zeros(3))
    counts = kmer_counts(data, 2)
    for row, got in zip(rows, counts):
        expected = Counter(row[i : i + 2] for i in range(len(row) - 1) if "N" not in row[i : i + 2])
        spelled = {"".join("ACGT"[(code >> s) & 3] for s in (2, 0)): n for code, n in enumerate(got) if n}
        assert spelled == expected


def test_kmer_baseline_finds_the_motifs_and_not_random_labels(tmp_path):
    task = make(data_dir=tmp_path, num_train=400, num_val=100, num_test=100, motif_len=4, max_len=32)
    assert kmer_baseline(task, k=4, steps=50)["test/acc"] >= 0.9  # the motifs are 4-mers
    task.setup()
    rng = np.random.default_rng(0)
    for split in task.splits.values():
        split.targets = rng.permutation(split.targets)  # the label no longer depends on the sequence
    assert kmer_baseline(task, k=4, steps=50)["test/acc"] < 0.45


@pytest.mark.slow
def test_export_and_predict_read_dna(tmp_path, capsys):
    root = write_benchmark(tmp_path / "demo", BENCH)
    task = GenomicsTask(data_dir=tmp_path, path=str(root), num_classes=2, max_len=16, batch_size=4)
    space = {
        "name": "dna",
        "dim": 16,
        "head_dim": 8,
        "depth": [1],
        "layer": {"attention": {"full": {}}, "heads": [2], "ffn_dim": [16]},
    }
    folder, model = export_task_model(task, space, [{"attention": "full", "heads": 2, "ffn_dim": 16}], tmp_path)
    script = folder_script(folder)
    assert script.main(["ACGTN acgt", "GATTACA"]) == 0  # whitespace skipped, any case
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with torch.no_grad():
        probs = [
            model(torch.tensor([["-ACGTN".index(c) for c in seq]]))[0].softmax(-1) for seq in ("ACGTNACGT", "GATTACA")
        ]
    assert [p["label"] for p in printed] == [["negative", "positive"][int(q.argmax())] for q in probs]
    assert [p["probability"] for p in printed] == pytest.approx([float(q.max()) for q in probs], abs=1e-5)
    assert script.main(["ACGU"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "predict.py: sequence 0: letter 'U' is not DNA; expected one of A C G T N"
