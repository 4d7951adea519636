"""nas.metrics against hand computations and PyTorch's own losses: the evaluation loop's
weighting by scored targets, the masked soft cross-entropy, the metric direction and the
finite-loss guard."""

import math

import pytest
import torch
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.metrics import (
    HIGHER_IS_BETTER,
    IGNORE_INDEX,
    check_finite,
    evaluate,
    evaluate_many,
    evaluate_with_loss,
    score,
    soft_cross_entropy,
    task_metric,
)


class Table(torch.nn.Module):
    """Logits looked up by token id: a model whose every prediction is chosen by hand."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, tokens, mask):
        return self.logits[tokens]  # (b, n, C)


def batch(tokens, target):
    tokens = torch.tensor(tokens)
    return {"tokens": tokens, "mask": tokens > 0, "target": torch.tensor(target)}


def test_evaluate_weights_batches_by_their_scored_targets():
    # token 1 predicts class 0, token 2 predicts class 1
    model = Table(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]))
    X = IGNORE_INDEX
    batches = [
        batch([[1, 1, 1, 1]], [[0, 0, 0, X]]),  # 3 scored, 3 right
        batch([[2, 1, 0, 0]], [[0, X, X, X]]),  # 1 scored, 0 right
        batch([[1, 2, 2, 2]], [[X, X, X, X]]),
    ]  # nothing scored: no weight
    # by hand: 3 right of 4 scored; a mean of batch means would say (1 + 0) / 2
    assert evaluate(model, batches, "acc") == pytest.approx(3 / 4)
    # bits per byte: the mean over the 4 scored targets of -log2 p(target)
    right, wrong = (
        -math.log2(F.softmax(torch.tensor([5.0, 0.0]), 0)[0].item()),
        -math.log2(F.softmax(torch.tensor([0.0, 5.0]), 0)[0].item()),
    )
    assert evaluate(model, batches, "bpb") == pytest.approx((3 * right + wrong) / 4, rel=1e-5)


def test_the_loss_is_weighted_like_the_metric_and_both_come_from_one_pass():
    model = Table(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]))
    X = IGNORE_INDEX
    batches = [batch([[1, 1, 1, 1]], [[0, 0, 0, X]]), batch([[2, 1, 0, 0]], [[0, X, X, X]])]
    right, wrong = (
        -math.log(F.softmax(torch.tensor([5.0, 0.0]), 0)[0].item()),
        -math.log(F.softmax(torch.tensor([0.0, 5.0]), 0)[0].item()),
    )
    assert evaluate_many({"m": model}, batches, "loss")["m"] == pytest.approx((3 * right + wrong) / 4, rel=1e-5)
    once = iter(batches)  # a generator: one pass must give both
    assert evaluate_with_loss(model, once, "acc") == pytest.approx((3 / 4, (3 * right + wrong) / 4), rel=1e-5)
    with pytest.raises(ConfigError, match="unknown metric 'f1'"):
        evaluate_with_loss(model, batches, "f1")


def test_evaluate_many_reads_a_generator_once_and_restores_modes():
    a, b = Table(torch.tensor([[0.0, 0.0], [5.0, 0.0]])), Table(torch.tensor([[0.0, 0.0], [0.0, 5.0]]))
    a.train(), b.eval()
    batches = (batch([[1, 1]], [[0, 1]]) for _ in range(3))
    assert evaluate_many({"a": a, "b": b}, batches, "acc") == {"a": 0.5, "b": 0.5}
    assert a.training and not b.training


def test_evaluate_refuses_batches_with_nothing_scored():
    model = Table(torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="no scored targets"):
        evaluate(model, [batch([[1]], [[IGNORE_INDEX]])], "acc")


def test_soft_cross_entropy_is_torchs_cross_entropy_with_probability_targets():
    torch.manual_seed(0)
    logits, teacher = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    target = torch.tensor([[1, IGNORE_INDEX, 2], [IGNORE_INDEX, IGNORE_INDEX, 0]])
    keep = target != IGNORE_INDEX
    probs = F.softmax(teacher, -1)  # (b, n, C): the teacher's distribution as the target
    # the reference: PyTorch's cross-entropy with class probabilities, over the three scored positions
    torch.testing.assert_close(soft_cross_entropy(logits, teacher, target), F.cross_entropy(logits[keep], probs[keep]))
    torch.testing.assert_close(
        soft_cross_entropy(logits, teacher), F.cross_entropy(logits.flatten(0, 1), probs.flatten(0, 1))
    )
    # against itself it is the teacher's entropy (its minimum), by torch.distributions
    torch.testing.assert_close(
        soft_cross_entropy(teacher, teacher), torch.distributions.Categorical(logits=teacher).entropy().mean()
    )


def test_score_puts_the_better_value_higher():
    assert HIGHER_IS_BETTER == {"acc": True, "bpb": False, "mse": False, "mae": False}
    assert score(0.9, "acc") > score(0.8, "acc")
    assert score(1.2, "bpb") > score(1.5, "bpb")
    assert score(0.2, "mse") > score(0.3, "mse") and score(0.2, "mae") > score(0.3, "mae")
    with pytest.raises(ConfigError, match="unknown metric 'f1'; allowed: acc, bpb"):
        score(0.5, "f1")


def test_task_metric_ignores_unscored_targets():
    logits = torch.tensor([[[9.0, 0.0], [9.0, 0.0]]])
    assert task_metric(logits, torch.tensor([[0, IGNORE_INDEX]]), "acc").item() == 1.0


def test_check_finite_names_the_step():
    check_finite(torch.tensor(1.0), 3)
    with pytest.raises(FloatingPointError, match="non-finite loss \\(nan\\) at training step 7"):
        check_finite(torch.tensor(float("nan")), 7)
