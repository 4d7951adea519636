"""nas.evidence against closed forms and hand counts: McNemar's exact test on correctness, the
paired t-test on continuous per-item scores, the verdict in the metric's direction, the text of a
decision and of the confidence line; and nas.metrics' per-item scores, whose mean is the metric."""

import math

import numpy as np
import pytest
import torch

from nas.errors import ConfigError
from nas.evidence import ALPHA, Separation, confidence, learned_fraction, paired_test, separate
from nas.metrics import METRICS, evaluate_items, evaluate_with_loss, item_metric, task_metric


def correctness(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 0/1 vectors over the same items with the given counts of each agreement."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, dtype=float), np.array(b, dtype=float)


def test_mcnemar_is_the_exact_binomial_on_the_discordant_items():
    # 10 items only a gets right, none only b: p = 2 * (1/2)^10
    assert paired_test(*correctness(5, 10, 0, 5)) == (pytest.approx(2 / 1024), "McNemar")
    # 7 against 3: p = 2 * (C(10,0) + C(10,1) + C(10,2) + C(10,3)) / 2^10 = 352 / 1024
    assert paired_test(*correctness(0, 7, 3, 0))[0] == pytest.approx(352 / 1024)
    # the items both get right or both wrong carry no evidence
    assert paired_test(*correctness(500, 7, 3, 400))[0] == pytest.approx(352 / 1024)
    assert paired_test(*correctness(3, 0, 0, 4)) == (1.0, "McNemar")  # no discordant item
    assert paired_test(*correctness(0, 4, 4, 0))[0] == pytest.approx(1.0)


def test_the_paired_t_test_matches_its_closed_forms():
    # one degree of freedom: t is Cauchy, p = 1 - (2 / pi) atan|t|
    a, b = np.array([1.0, 2.5]), np.array([0.5, 1.0])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(2))
    assert paired_test(a, b) == (pytest.approx(1 - 2 / math.pi * math.atan(abs(t))), "paired t")
    # two degrees of freedom: p = 1 - |t| / sqrt(2 + t^2)
    a, b = np.array([0.3, 1.2, 0.9]), np.array([0.1, 0.4, 1.0])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert paired_test(a, b)[0] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    assert paired_test(b, a)[0] == pytest.approx(paired_test(a, b)[0])  # two-sided


def test_degenerate_continuous_scores():
    same = np.array([0.2, 0.7, 1.3])
    assert paired_test(same, same) == (1.0, "paired t")  # no difference at all
    assert paired_test(same + 0.5, same) == (0.0, "paired t")  # the same shift on every item: no noise
    assert paired_test(np.array([0.5]), np.array([0.25])) == (1.0, "paired t")  # one item tells nothing
    with pytest.raises(ValueError, match="equal non-empty 1-D"):
        paired_test(np.zeros(3), np.zeros(4))


def test_a_decision_on_a_handful_of_items_is_not_separated_and_a_clear_one_is():
    # 8 items: the winner gets 5 right, the runner-up 3; of the 4 items only one gets right, 3 are the winner's
    handful = separate("layer1.attention", "performer", "full", *correctness(2, 3, 1, 2), higher_is_better=True)
    assert handful.winner_value == 5 / 8 and handful.runner_up_value == 3 / 8 and handful.items == 8
    assert handful.p == pytest.approx(2 * (1 + 4) / 16) and not handful.separated  # 3 vs 1: p = 0.625
    # 1000 items: 900 against 500 right, 420 of 440 discordant items go the winner's way
    clear = separate("layer1.attention", "full", "performer", *correctness(480, 420, 20, 80), higher_is_better=True)
    assert clear.p < 1e-90 and clear.separated and clear.test == "McNemar"


def test_separated_means_better_in_the_metric_direction():
    rng = np.random.default_rng(0)
    low = rng.uniform(0.5, 1.5, 400)  # bits per item: lower is better
    high = low + rng.uniform(0.2, 0.4, 400)
    assert separate("depth", "2", "1", low, high, higher_is_better=False).separated
    # kept on a tie-break or a cost penalty although its metric is worse: never separated
    worse = separate("depth", "1", "2", high, low, higher_is_better=False)
    assert worse.p < ALPHA and not worse.separated and worse.worse
    assert worse.describe().endswith("(not separated; 2 scores better, 1 was kept for cost or constraints)")
    assert separate("depth", "2", "1", high, low, higher_is_better=True).separated


def test_a_decision_reads_as_one_line():
    s = Separation("layer1.attention", "performer", "full", 0.2324, 0.22268, 0.4137, "McNemar", 1024, False)
    assert s.describe() == "layer1.attention: performer over full, 0.2324 vs 0.2227, p = 0.41 (not separated)"
    sure = Separation("depth", "2", "1", 0.9, 0.5, 3e-7, "McNemar", 1024, True)
    assert sure.describe() == "depth: 2 over 1, 0.9000 vs 0.5000, p < 0.001 (separated)"
    assert "p = 0.004 (separated)" in Separation("d", "a", "b", 1.0, 0.0, 0.0041, "paired t", 9, True).describe()
    assert sure.to_dict() == {
        "decision": "depth",
        "winner": "2",
        "runner_up": "1",
        "winner_value": 0.9,
        "runner_up_value": 0.5,
        "p": 3e-7,
        "test": "McNemar",
        "items": 1024,
        "separated": True,
        "worse": False,
    }


def decisions(separated: int, total: int) -> list[Separation]:
    return [
        Separation(f"d{i}", "a", "b", 0.9, 0.8, 0.01 if i < separated else 0.5, "McNemar", 1024, i < separated)
        for i in range(total)
    ]


def test_the_confidence_line_when_the_supernet_has_not_learned_the_task():
    line = confidence(decisions(1, 7), "search/val/acc", 0.2324, 0.125, higher_is_better=True)
    assert line.startswith("confidence: 1 of 7 decisions separated (paired, p < 0.05, 1024 items); ")
    assert "search/val/acc 0.2324 is near the task's baseline 0.1250 (12% of the way to a perfect score)" in line
    assert "the supernet has not learned the task" in line
    for remedy in ("trainer.max_epochs", "search.eval_batches", "sharing="):
        assert remedy in line
    # lower is better: 4.4 bits against a unigram 4.5 closed 2% of the gap to 0
    assert "has not learned" in confidence(decisions(7, 7), "search/val/bpb", 4.4, 4.5, higher_is_better=False)
    assert "has not learned" in confidence([], "search/val/acc", 0.05, 0.125, higher_is_better=True)  # below it
    assert "\n" not in line


def test_the_confidence_line_when_it_has():
    assert (
        confidence(decisions(7, 7), "search/val/acc", 0.95, 0.125, higher_is_better=True)
        == "confidence: 7 of 7 decisions separated (paired, p < 0.05, 1024 items)"
    )
    some = confidence(decisions(2, 7), "search/val/bpb", 2.0, 4.5, higher_is_better=False)
    assert some.startswith("confidence: 2 of 7 decisions separated") and "the others are within noise" in some
    assert "has not learned" not in some
    assert "; it is within noise: " in confidence(decisions(0, 1), "search/val/bpb", 2.9, 4.58, False)  # a pick of k
    assert "; all are within noise: " in confidence(decisions(0, 3), "search/val/bpb", 2.9, 4.58, False)
    # a constraint kept 2 heads over a clearly better 4: said so, not called noise
    overruled = [*decisions(3, 3), separate("layer0.heads", "2", "4", [3.5] * 9 + [3.6], [3.4] * 9 + [3.45], False)]
    line = confidence(overruled, "search/val/bpb", 3.47, 4.58, higher_is_better=False)
    assert line == (
        "confidence: 3 of 4 decisions separated (paired, p < 0.05, 1024 items); "
        "1 kept for cost or constraints over a clearly better runner-up"
    )
    # lm_quick's supernet: 3.47 bits against a unigram 4.58 is 24% of the way to an unreachable 0
    assert "has not learned" not in confidence(decisions(4, 4), "search/val/bpb", 3.47, 4.58, higher_is_better=False)
    assert (
        confidence([], "search/val/acc", 0.9, None, True) == "confidence: no decision was compared on validation items"
    )


def test_learned_fraction():
    assert learned_fraction(0.2324, 0.125, True) == pytest.approx(0.1074 / 0.875)
    assert learned_fraction(2.25, 4.5, False) == pytest.approx(0.5)
    assert learned_fraction(0.5, None, True) is None and learned_fraction(0.5, 1.0, True) is None


class Table(torch.nn.Module):
    """Logits looked up by token id: predictions chosen by hand."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, tokens, mask):
        return self.logits[tokens]  # (b, n, C)


def test_per_item_scores_are_the_metric_of_each_scored_target():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])  # token -> logits
    batches = [
        {
            "tokens": torch.tensor([[1, 2, 3]]),
            "mask": torch.ones(1, 3, dtype=bool),
            "target": torch.tensor([[1, -100, 1]]),
        },
        {"tokens": torch.tensor([[2, 1]]), "mask": torch.ones(1, 2, dtype=bool), "target": torch.tensor([[2, 0]])},
        {
            "tokens": torch.tensor([[1, 1, 2]]),
            "mask": torch.ones(1, 3, dtype=bool),
            "target": torch.tensor([[1, 1, 0]]),
        },
    ]
    model = Table(logits)
    value, loss, items = evaluate_items(model, batches, "acc")
    assert items.tolist() == [1, 0, 1, 0, 1, 1, 0]  # the scored targets in batch order; token 2 is unscored
    assert value == 4 / 7  # exactly: the right answers counted, not batch means of 1/2 and 2/3 weighted
    assert (value, loss) == evaluate_with_loss(model, batches, "acc")  # the same numbers, not re-derived
    value, _, bits = evaluate_items(model, batches, "bpb")
    scored = ((1, 1), (3, 1), (2, 2), (1, 0), (1, 1), (1, 1), (2, 0))  # (token, target)
    by_hand = [-math.log2(torch.softmax(logits[t], 0)[y].item()) for t, y in scored]
    assert bits.tolist() == pytest.approx(by_hand, rel=1e-6) and value == pytest.approx(np.mean(by_hand), rel=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_the_mean_of_the_item_metric_is_the_task_metric(metric):
    """For every metric: the one definition of a metric is per item; a batch's metric is its mean."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 5, generator=g)  # (b, n, C)
    target = torch.randint(0, 5, (4, 6), generator=g)
    target[0, :3] = -100
    try:
        items = item_metric(logits, target, metric)
    except ConfigError:  # a metric of forecasts: real-valued targets of the output's shape
        target = torch.randn(4, 6, 5, generator=g)
        items = item_metric(logits, target, metric)
    assert items.ndim == 1 and torch.equal(items.mean(), task_metric(logits, target, metric))
