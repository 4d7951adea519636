"""Byte LM: hidden bytes are scored and never visible; files split whole; unigram baseline."""

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.base import IGNORE_INDEX
from nas.tasks.bytelm import MASK, ByteLMTask, split_files
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint


def source_tree(root, files: int = 60):
    """A folder of small, distinct .py files, with a tests/ folder that must be skipped."""
    if root.exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(files):
        words = rng.choice(["def", "return", "x", "self", "(", ")", ":", "\n", "    "], 80)
        path = root / f"pkg{i % 3}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\n" + " ".join(words))
    (root / "tests").mkdir(exist_ok=True)
    (root / "tests" / "test_skipped.py").write_text("SKIPPED" * 100)
    return root


def make(seed, data_dir, **overrides):
    root = source_tree(data_dir / "src")
    options = dict(root=str(root), seq_len=32, val_fraction=0.2, test_fraction=0.2, batch_size=8)
    return ByteLMTask(data_dir=data_dir, seed=seed, **{**options, **overrides})


def test_hidden_bytes_are_the_targets_and_never_in_the_input(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    data = task.splits["train"]
    hidden_share = data.hidden.mean()
    assert 0.1 < hidden_share < 0.2  # mask_prob 0.15
    for i in range(len(data)):
        tokens, target = data[i]
        original = data.data[i].astype(np.int64) + 1
        scored = target != IGNORE_INDEX
        assert scored.any()
        assert (tokens[scored] == MASK).all() and (tokens[~scored] == original[~scored]).all()
        assert (target[scored] == original[scored]).all()


def test_files_are_split_whole_and_tests_skipped(tmp_path):
    root = source_tree(tmp_path / "src")
    task = make(0, tmp_path)
    files = split_files(root, task.config)
    names = {split: {p.name for p in paths} for split, paths in files.items()}
    assert all(names.values())
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    assert sum(map(len, names.values())) == 60  # test_skipped.py is not among them


def test_split_does_not_depend_on_the_seed(tmp_path):
    a, b = make(0, tmp_path), make(1, tmp_path)
    a.setup()
    b.setup()
    assert (a.splits["val"].data == b.splits["val"].data).all()
    assert not (a.splits["val"].hidden == b.splits["val"].hidden).all()


def test_shapes_vocabulary_and_targets(tmp_path):
    task = make(0, tmp_path)
    assert (task.vocab_size, task.num_classes, task.seq_len) == (258, 258, 32)
    assert (task.readout, task.metric) == ("tokens", "bpb")
    check_batches(task)


def test_windows_are_disjoint_across_splits(tmp_path):
    check_disjoint(make(0, tmp_path))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def test_baseline_is_unigram_bits_per_byte(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    train = task.splits["train"].scored_targets()
    counts = np.bincount(train, minlength=258) + 1.0
    p = counts / counts.sum()
    val = task.splits["val"].scored_targets()
    expected = -np.log2(p[val]).mean()
    baseline = task.baseline()["val/bpb"]
    assert baseline == pytest.approx(expected)
    assert 1.0 < baseline < 5.0  # a few dozen distinct bytes: well under 8 bits


def test_standard_library_is_read(tmp_path):
    task = ByteLMTask(data_dir=tmp_path, seq_len=256, max_files=3)
    task.setup()
    assert all(len(task.splits[s]) > 0 for s in ("train", "val", "test"))
    assert b"def " in task.splits["train"].data.tobytes()  # it is Python source
    assert 3.5 < task.baseline()["test/bpb"] < 6.0


def test_too_little_text_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="the train split of .* has \\d+ bytes, less than one seq_len \\(100000\\)"):
        make(0, tmp_path, seq_len=100_000).setup()
    with pytest.raises(ConfigError, match=f"task 'bytelm': missing folder {tmp_path}/nope"):
        ByteLMTask(root=str(tmp_path / "nope")).setup()
