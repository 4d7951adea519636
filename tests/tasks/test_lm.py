"""Causal byte LM: enwik8's 90M/5M/5M split, files and folders read as bytes, next-byte targets,
bits per byte against closed forms, crops drawn from (seed, epoch)."""

import json
import logging
import math
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from nas import predict
from nas.errors import ConfigError
from nas.metrics import evaluate
from nas.space import Arch
from nas.supernet import Supernet
from nas.tasks import build_task
from nas.tasks.base import IGNORE_INDEX
from nas.tasks.lm import ENWIK8_BYTES, LMTask, split_bounds
from tests.helpers import load_space
from tests.tasks.task_checks import check_batches

TEXT = b"the quick brown fox jumps over the lazy dog. " * 44 + b"0123456789"  # 1990 bytes


def make(path, data_dir, **overrides):
    options = dict(seq_len=16, batch_size=4)
    return LMTask(data_dir=data_dir, path=str(path), **{**options, **overrides})


def text_file(tmp_path, data: bytes = TEXT, name: str = "corpus.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_published_enwik8_file_gets_the_standard_90M_5M_5M_split(tmp_path, caplog):
    assert split_bounds(ENWIK8_BYTES) == (90_000_000, 95_000_000)
    path = tmp_path / "enwik8"  # sparse: zeros but for a marker on each side of each cut
    with open(path, "wb") as f:
        f.truncate(ENWIK8_BYTES)
        for offset, marks in ((89_999_999, b"\x01\x02"), (94_999_999, b"\x03\x04"), (ENWIK8_BYTES - 1, b"\x05")):
            f.seek(offset)
            f.write(marks)
    task = make(path, tmp_path, seq_len=1000)
    with caplog.at_level(logging.WARNING):
        task.setup()
    assert not caplog.records  # the real size: no warning that figures do not compare
    train, val, test = (task.splits[s].data for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (90_000_000, 5_000_000, 5_000_000)
    assert (train[-1], val[0], val[-1], test[0], test[-1]) == (1, 2, 3, 4, 5)
    assert len(task.splits["val"]) == len(task.splits["test"]) == 5000  # ceil(4,999,999 / 1000)


def test_a_file_is_cut_90_5_5_by_bytes(tmp_path):
    data = bytes(range(200)) * 10  # 2000 bytes
    task = make(text_file(tmp_path, data), tmp_path)
    task.setup()
    text = np.frombuffer(data, dtype=np.uint8)
    assert (task.splits["train"].data == text[:1800]).all()
    assert (task.splits["val"].data == text[1800:1900]).all()
    assert (task.splits["test"].data == text[1900:]).all()


def test_enwik8_zip_reads_as_the_file_it_holds_and_a_wrong_size_is_said(tmp_path, caplog):
    (tmp_path / "plain").mkdir()
    plain = make(text_file(tmp_path / "plain", TEXT, "enwik8"), tmp_path)
    with zipfile.ZipFile(tmp_path / "enwik8.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enwik8", TEXT)
    zipped = make(tmp_path / "enwik8.zip", tmp_path)
    with caplog.at_level(logging.WARNING):
        plain.setup()
        zipped.setup()
    for split in ("train", "val", "test"):
        assert (plain.splits[split].data == zipped.splits[split].data).all()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("not enwik8's 100000000" in w for w in warnings)


def test_targets_are_the_next_bytes_and_val_scores_every_byte_once(tmp_path):
    task = make(text_file(tmp_path), tmp_path, seq_len=12)  # val: 99 bytes, 98 scored: 8 windows of 12, one of 2
    task.setup()
    val = task.splits["val"]
    windows = [val[k] for k in range(len(val))]
    assert [len(tokens) for tokens, _ in windows] == [12] * 8 + [2]
    for tokens, target in windows:
        assert (target[:-1] == tokens[1:]).all()  # target at i is token i + 1
    for (_, target), (tokens, _) in zip(windows, windows[1:]):
        assert target[-1] == tokens[0]  # a window's last target starts the next one
    expected = val.data.astype(np.int64) + 1
    assert (np.concatenate([t for t, _ in windows]) == expected[:-1]).all()
    assert (np.concatenate([t for _, t in windows]) == expected[1:]).all()
    assert (val.scored_targets() == expected[1:]).all()
    batch = next(iter(task.val_dataloader()))
    assert (batch["target"] != IGNORE_INDEX).sum(1).tolist() == [12, 12, 12, 12]


def test_val_windows_keeps_the_first_val_windows_and_test_stays_whole(tmp_path):
    task = make(text_file(tmp_path), tmp_path, seq_len=12, val_windows=3)
    task.setup()
    val = task.splits["val"]
    assert len(val) == 3 and len(task.splits["test"]) == 9  # ceil(99 / 12)
    assert (val.scored_targets() == val.data[1:37].astype(np.int64) + 1).all()


def test_training_crops_are_next_byte_windows_of_the_train_bytes(tmp_path):
    task = make(text_file(tmp_path), tmp_path, seq_len=16)
    task.setup()
    train = task.splits["train"].data.astype(np.int64) + 1
    loader = task.train_dataloader()
    assert len(loader.sampler) == (1791 - 1) // 16  # as many crops per epoch as windows fit the train bytes
    for batch in loader:
        tokens, target = batch["tokens"], batch["target"]
        assert tokens.shape[1] == 16 and batch["mask"].all() and (target[:, :-1] == tokens[:, 1:]).all()
        for row, last in zip(tokens.numpy(), target[:, -1].numpy()):
            start = next(s for s in range(len(train) - 16) if (train[s : s + 16] == row).all())
            assert train[start + 16] == last


def starts(task, epoch):
    sampler = task.train_dataloader().sampler
    sampler.set_epoch(epoch)
    return list(sampler)


def test_crops_come_from_seed_and_epoch_and_val_and_test_from_neither(tmp_path):
    path = text_file(tmp_path)
    a, again, other = (make(path, tmp_path, seed=seed, crops_per_epoch=50) for seed in (0, 0, 1))
    assert len(starts(a, 0)) == 50
    assert starts(a, 0) == starts(again, 0) and starts(a, 3) == starts(again, 3)
    assert starts(a, 0) != starts(a, 1)  # new crops each epoch
    assert starts(a, 0) != starts(other, 0)
    assert max(starts(a, 2)) < len(a.splits["train"]) and min(starts(a, 2)) >= 0
    for split in ("val", "test"):
        assert [t.tolist() for t, _ in a.splits[split]] == [t.tolist() for t, _ in other.splits[split]]


def test_a_folder_is_its_files_joined_in_an_order_fixed_by_their_paths(tmp_path):
    contents = {f"part{i}/doc{i}.txt": bytes([65 + i]) * (50 + 7 * i) for i in range(8)}
    folders = []
    for name, order in (("a", contents), ("b", dict(reversed(contents.items())))):
        root = tmp_path / name
        for rel, data in order.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        (root / ".hidden.txt").write_bytes(b"#" * 100)
        (root / ".git").mkdir()
        (root / ".git" / "objects").write_bytes(b"#" * 100)
        folders.append(root)
    texts = []
    for root in folders:
        task = make(root, tmp_path, seq_len=4)
        task.setup()
        texts.append(b"".join(task.splits[s].data.tobytes() for s in ("train", "val", "test")))
    assert texts[0] == texts[1]  # not the order the files were written in
    assert sorted(texts[0]) == sorted(b"".join(contents.values()))  # hidden files skipped
    # each file's bytes stay together: the joined text is 8 runs of one byte each
    assert sum(1 for i in range(1, len(texts[0])) if texts[0][i] != texts[0][i - 1]) == 7
    assert texts[0] != b"".join(contents.values())  # shuffled, so val and test are not the last names


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(b""), "{p} is empty"),
        (lambda p: p.write_bytes(b"x" * 300), r"{p} has 300 bytes, and its val split \(5%\) 15, fewer than one window"),
        (lambda p: None, "path {p}: no such file or folder"),
        (lambda p: p.mkdir(), "folder {p} holds no files"),
    ],
)
def test_a_text_too_short_for_a_window_is_one_line_naming_it(tmp_path, write, message):
    path = tmp_path / "corpus"
    write(path)
    with pytest.raises(ConfigError, match=message.format(p=path)) as err:
        make(path, tmp_path, seq_len=16).setup()
    assert "\n" not in str(err.value)


def test_a_zip_that_is_not_enwik8s_layout_is_one_line(tmp_path):
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.txt", TEXT)
        archive.writestr("b.txt", TEXT)
    with pytest.raises(ConfigError, match="two.zip holds 2 files and none named two"):
        make(tmp_path / "two.zip", tmp_path).setup()
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ConfigError, match="bad.zip is not a readable zip file"):
        make(tmp_path / "bad.zip", tmp_path).setup()
    with zipfile.ZipFile(tmp_path / "one.zip", "w") as archive:
        archive.writestr("any.txt", TEXT)
    task = make(tmp_path / "one.zip", tmp_path)  # its only file, whatever its name
    task.setup()
    assert task.splits["train"].data.tobytes() == TEXT[:1791]


class Unigram(nn.Module):
    """The same log-probabilities at every position, whatever the input."""

    def __init__(self, log_p: torch.Tensor):
        super().__init__()
        self.log_p = nn.Parameter(log_p, requires_grad=False)  # (C,)

    def forward(self, tokens, mask):
        return self.log_p.expand(*tokens.shape, -1)  # (b, n, C)


def test_bits_per_byte_of_a_uniform_and_a_unigram_model_are_their_closed_forms(tmp_path):
    task = make(text_file(tmp_path), tmp_path, seq_len=12)
    uniform = torch.full((257,), 0.0)
    uniform[0] = -math.inf  # padding is never a byte: 256 outcomes
    assert evaluate(Unigram(uniform), task.val_dataloader(), "bpb") == pytest.approx(8.0)
    train = np.frombuffer(TEXT[:1791], dtype=np.uint8).astype(np.int64)[1:] + 1
    counts = np.bincount(train, minlength=257) + 1.0  # add-one smoothed over the 257 outputs
    log2_p = np.log2(counts / counts.sum())
    for split, (lo, hi) in {"val": (1791, 1890), "test": (1890, 1990)}.items():
        targets = np.frombuffer(TEXT[lo:hi], dtype=np.uint8).astype(np.int64)[1:] + 1
        expected = -log2_p[targets].mean()
        loader = task.val_dataloader() if split == "val" else task.test_dataloader()
        model = Unigram(torch.tensor(log2_p * math.log(2), dtype=torch.float32))
        assert evaluate(model, loader, "bpb") == pytest.approx(expected, rel=1e-5)
        assert task.baseline()[f"{split}/bpb"] == pytest.approx(expected)


def test_shape_batches_and_description_say_causal_next_byte(tmp_path):
    task = make(text_file(tmp_path), tmp_path)
    assert task.shape.causal and (task.vocab_size, task.num_classes, task.seq_len) == (257, 257, 16)
    assert (task.readout, task.metric) == ("tokens", "bpb")
    check_batches(task)
    described = task.describe()
    assert (described["input"], described["offset"], described["causal"]) == ("bytes", 1, True)
    assert described["classes"][1 + ord("a")] == "a" and len(described["classes"]) == 257
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps(described))
    for causal in (True, False):
        shape = {"vocab_size": 257, "num_classes": 257, "max_len": 16, "readout": "tokens", "causal": causal}
        (folder / "model.json").write_text(json.dumps({"shape": shape, "metric": "bpb"}))
        if causal:
            assert predict.describe(folder)["causal"] is True
        else:
            with pytest.raises(predict.InputError, match="causal True differs from model.json's False"):
                predict.describe(folder)


def test_the_default_text_is_the_standard_library_and_the_record_builds_it_again(tmp_path):
    task = LMTask(data_dir=tmp_path, seq_len=256, val_windows=4)
    task.setup()
    assert b"def " in task.splits["train"].data[:100_000].tobytes()  # Python source
    assert len(task.splits["train"].data) > 1_000_000
    assert 3.5 < task.baseline()["test/bpb"] < 6.0
    again = build_task(task.record(), tmp_path, "record")
    assert again.config == task.config and again.causal


def test_a_model_of_the_task_sees_only_the_past_in_the_supernet_and_the_subnet(tmp_path):
    """The task's shape makes every model causal: bytes from position t on never change the
    logits before t, so no target (the next byte) is visible in the input."""
    task = make(text_file(tmp_path), tmp_path, seq_len=48)
    space = load_space("lm_small")
    supernet = Supernet(space, task.shape).eval()
    tokens = next(iter(task.val_dataloader()))["tokens"]  # (4, 48)
    changed = tokens.clone()
    changed[:, 20:] = torch.randint(1, 257, changed[:, 20:].shape)
    for attention in space.attention:
        arch = Arch.from_dict({"depth": 2, "layers": [{"attention": attention, "heads": 4, "ffn_dim": 128}] * 2})
        for model in (lambda x, a=arch: supernet(x, a), supernet.extract(arch).eval()):
            with torch.no_grad():
                before, after = model(tokens), model(changed)
            assert torch.equal(before[:, :20], after[:, :20]), attention
            assert not torch.allclose(before[:, 20:], after[:, 20:]), attention
