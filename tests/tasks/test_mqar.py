"""MQAR: every answer is recallable from the pairs and never visible where it is asked."""

import numpy as np
import pytest
import torch

from nas.errors import ConfigError
from nas.model import ModelSpec, Subnet
from nas.space import Arch, LayerArch, SearchSpace
from nas.tasks import build_task
from nas.tasks.base import IGNORE_INDEX
from nas.tasks.lookup import LookupTask
from nas.tasks.mqar import ANSWER, BLANK, FIRST_KEY, MQARTask
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

TINY = dict(
    seq_len=48,
    num_pairs=6,
    num_queries=4,
    num_keys=12,
    num_values=10,
    num_train=64,
    num_val=16,
    num_test=16,
    batch_size=8,
)


def make(seed, data_dir, **overrides):
    return MQARTask(data_dir=data_dir, seed=seed, **{**TINY, **overrides})


def test_answers_come_from_the_pairs_and_are_hidden(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    pairs = 2 * TINY["num_pairs"]
    keys = range(FIRST_KEY, FIRST_KEY + TINY["num_keys"])
    for tokens, target in task.splits["train"]:
        bound = dict(zip(tokens[0:pairs:2].tolist(), tokens[1:pairs:2].tolist()))
        assert len(bound) == TINY["num_pairs"] and set(bound) <= set(keys)
        asked = np.flatnonzero(target != IGNORE_INDEX)
        assert len(asked) == TINY["num_queries"] and asked.min() > pairs
        assert (tokens[asked] == ANSWER).all()  # the answer slot shows no answer
        for pos in asked:
            assert target[pos] == bound[tokens[pos - 1]]  # the value bound to the key before it
        rest = np.setdiff1d(np.arange(pairs, len(tokens)), np.concatenate([asked, asked - 1]))
        assert (tokens[rest] == BLANK).all()


def test_shapes_vocabulary_and_targets(tmp_path):
    task = make(0, tmp_path)
    assert task.vocab_size == task.num_classes == FIRST_KEY + 12 + 10
    assert (task.seq_len, task.readout, task.metric) == (48, "tokens", "acc")
    check_batches(task)


def test_splits_are_disjoint(tmp_path):
    check_disjoint(make(0, tmp_path))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def test_baseline_is_chance_over_values(tmp_path):
    task = make(0, tmp_path, num_train=2000, num_val=500, num_values=10)
    assert task.baseline()["val/acc"] == pytest.approx(0.1, abs=0.03)


def test_long_sequences(tmp_path):
    task = make(
        0,
        tmp_path,
        seq_len=4096,
        num_pairs=64,
        num_queries=64,
        num_keys=128,
        num_values=64,
        num_train=8,
        num_val=2,
        num_test=2,
    )
    batch = next(iter(task.train_dataloader()))
    assert batch["tokens"].shape == (8, 4096)
    assert ((batch["target"] != IGNORE_INDEX).sum(1) == 64).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_queries=7), r"num_queries must be in 1..num_pairs \(6\), got 7"),
        (dict(num_pairs=13), r"num_pairs must be in 1..num_keys \(12\), got 13"),
        (dict(seq_len=16), "seq_len 16 cannot hold 6 pairs and 4 queries"),
        (dict(bogus=1), "unknown option 'bogus' for task 'mqar'; allowed: batch_size, "),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make(0, tmp_path, **overrides)


def test_too_few_distinct_examples_is_a_clear_error(tmp_path):
    task = make(0, tmp_path, seq_len=4, num_pairs=1, num_queries=1, num_keys=1, num_values=2, num_train=5)
    with pytest.raises(ConfigError, match="found only 2 distinct examples of the 37 asked for"):
        task.setup()


def test_bidirectional_unless_asked_and_causal_when_asked(tmp_path):
    assert not make(0, tmp_path).shape.causal and not MQARTask.causal  # existing runs stay bidirectional
    task = make(0, tmp_path, causal=True)
    assert task.shape.causal and task.record()["causal"] is True
    assert build_task(task.record(), tmp_path, "record").shape.causal  # as standalone jobs rebuild it
    again = build_task({"name": "mqar", **TINY, "causal": "true"}, tmp_path, "task")  # as the CLI passes it
    assert again.shape.causal


def test_a_model_built_for_the_causal_task_is_causal(tmp_path):
    task = make(0, tmp_path, causal=True)
    layer = {"attention": {"full": {}, "gla": {}}, "heads": [2], "ffn_dim": [32]}
    space = SearchSpace.from_dict({"name": "causal", "dim": 16, "head_dim": 8, "depth": [2], "layer": layer})
    arch = Arch(2, (LayerArch("full", 2, 32), LayerArch("gla", 2, 32)))
    torch.manual_seed(0)
    model = Subnet(ModelSpec(arch, space, task.shape)).eval()
    assert all(block.attn.core.causal for block in model.blocks)
    task.setup()
    tokens = torch.from_numpy(task.splits["train"][0][0])[None]  # (1, 48)
    later = tokens.clone()
    later[:, 30:] = torch.where(later[:, 30:] == BLANK, ANSWER, BLANK)  # every token after position 29 changed
    with torch.no_grad():
        before, after = model(tokens), model(later)
    torch.testing.assert_close(before[:, :30], after[:, :30], rtol=0, atol=1e-6)  # outputs to t read nothing after t
    assert not torch.allclose(before[:, 30:], after[:, 30:])


def test_lookup_has_no_causal_option(tmp_path):
    # its queries may come before their pairs, so a causal model could not answer them
    with pytest.raises(ConfigError, match="unknown option 'causal' for task 'lookup'"):
        LookupTask(data_dir=tmp_path, causal=True)
