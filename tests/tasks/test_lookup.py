"""Key-value lookup: each answer is bound by a pair token elsewhere and never visible where asked."""

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.base import IGNORE_INDEX
from nas.tasks.lookup import LookupTask
from nas.tasks.mqar import BLANK, FIRST_KEY
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

TINY = dict(
    seq_len=24,
    num_pairs=5,
    num_queries=3,
    num_keys=10,
    num_values=6,
    num_train=64,
    num_val=16,
    num_test=16,
    batch_size=8,
)
FIRST_VALUE = FIRST_KEY + TINY["num_keys"]
FIRST_PAIR = FIRST_VALUE + TINY["num_values"]


def make(seed, data_dir, **overrides):
    return LookupTask(data_dir=data_dir, seed=seed, **{**TINY, **overrides})


def test_answers_are_bound_by_pair_tokens_and_hidden(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    first_pair_places = []
    for tokens, target in task.splits["train"]:
        is_pair = tokens >= FIRST_PAIR
        key, value = np.divmod(tokens[is_pair] - FIRST_PAIR, TINY["num_values"])
        bound = dict(zip((key + FIRST_KEY).tolist(), (value + FIRST_VALUE).tolist()))
        assert len(bound) == is_pair.sum() == TINY["num_pairs"]  # distinct keys
        asked = np.flatnonzero(target != IGNORE_INDEX)
        assert len(asked) == TINY["num_queries"]
        assert ((tokens[asked] >= FIRST_KEY) & (tokens[asked] < FIRST_VALUE)).all()  # a bare key
        for pos in asked:
            assert target[pos] == bound[tokens[pos]]
        others = np.setdiff1d(np.flatnonzero(~is_pair), asked)
        assert (tokens[others] == BLANK).all()
        first_pair_places.append(np.flatnonzero(is_pair).min())
    # scattered: pairs are not always first, so no fixed place holds them
    assert max(first_pair_places) > TINY["num_queries"]


def test_shapes_vocabulary_and_targets(tmp_path):
    task = make(0, tmp_path)
    assert task.vocab_size == task.num_classes == FIRST_PAIR + 10 * 6
    assert (task.seq_len, task.readout, task.metric) == (24, "tokens", "acc")
    check_batches(task)


def test_splits_are_disjoint(tmp_path):
    check_disjoint(make(0, tmp_path))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def test_baseline_is_chance_over_values(tmp_path):
    task = make(0, tmp_path, num_train=2000, num_val=500)
    assert task.baseline()["val/acc"] == pytest.approx(1 / 6, abs=0.04)


def test_pairs_and_queries_may_fill_the_sequence(tmp_path):
    task = make(0, tmp_path, seq_len=8, num_pairs=4, num_queries=4, num_keys=4, num_values=64)
    tokens, _ = task.train_dataloader().dataset[0]
    assert (tokens != BLANK).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(seq_len=7), "seq_len 7 cannot hold 5 pairs and 3 queries \\(needs 8\\)"),
        (dict(num_queries=6), r"num_queries must be in 1..num_pairs \(5\), got 6"),
        (dict(bogus=1), "unknown option 'bogus' for task 'lookup'; allowed: batch_size, "),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make(0, tmp_path, **overrides)
