"""Selective copying: the targets are the content tokens in order; answer slots show none."""

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.base import IGNORE_INDEX
from nas.tasks.selective_copy import ANSWER, FIRST_CONTENT, NOISE, SelectiveCopyTask
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

TINY = dict(seq_len=40, num_tokens=5, alphabet=6, num_train=64, num_val=16, num_test=16, batch_size=8)


def make(seed, data_dir, **overrides):
    return SelectiveCopyTask(data_dir=data_dir, seed=seed, **{**TINY, **overrides})


def test_targets_are_the_content_tokens_in_order(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    m, n = TINY["num_tokens"], TINY["seq_len"]
    for tokens, target in task.splits["train"]:
        body = tokens[: n - m]
        content = body[body != NOISE]
        assert len(content) == m and (content >= FIRST_CONTENT).all()
        assert (tokens[n - m :] == ANSWER).all()  # the answer slots show no answer
        assert (target[: n - m] == IGNORE_INDEX).all()
        assert target[n - m :].tolist() == content.tolist()


def test_content_positions_vary(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    first = {int(np.flatnonzero(t != NOISE)[0]) for t, _ in task.splits["train"]}
    assert len(first) > 5


def test_shapes_vocabulary_and_targets(tmp_path):
    task = make(0, tmp_path)
    assert task.vocab_size == task.num_classes == FIRST_CONTENT + 6
    assert (task.seq_len, task.readout, task.metric) == (40, "tokens", "acc")
    check_batches(task)


def test_splits_are_disjoint(tmp_path):
    check_disjoint(make(0, tmp_path))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def test_16k_sequences(tmp_path):
    task = make(
        0, tmp_path, seq_len=16384, num_tokens=16, alphabet=16, num_train=4, num_val=2, num_test=2, batch_size=4
    )
    batch = next(iter(task.train_dataloader()))
    assert batch["tokens"].shape == (4, 16384)
    assert ((batch["target"] != IGNORE_INDEX).sum(1) == 16).all()


def test_baseline_is_chance_over_the_alphabet(tmp_path):
    task = make(0, tmp_path, num_train=1000, num_val=400)
    assert task.baseline()["val/acc"] == pytest.approx(1 / 6, abs=0.04)


def test_bad_config_is_one_clear_line(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"task 'selective_copy': seq_len must be >= 2 \* "
        r"num_tokens \(10\), got 9",
    ):
        make(0, tmp_path, seq_len=9)
