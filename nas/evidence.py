"""Whether a search's decision is more than sampling noise: the winner against the runner-up,
paired on the same validation items, and the one line on how sure the whole pick is.

Correctness (scores of 0 and 1 on every item) is compared by McNemar's exact test: under no
difference, the items only one of the two gets right fall to either side with probability 1/2
(McNemar 1947, https://doi.org/10.1007/BF02295996; exact binomial form as in Dietterich 1998,
https://doi.org/10.1162/089976698300017197). Any other per-item score (bits, squared error) is
compared by the paired t-test of the mean difference, the quantity the decision was made on.
# n items
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # a decision is separated when its two-sided paired p-value is below this
# A search metric that closes less of the gap from the task's baseline to a perfect score than
# this says the supernet has not learned the task. Accuracy's perfect score (1) can be reached; a
# loss's (0 bits per byte, 0 MSE) cannot, as text and series hold noise no model predicts (the best
# byte LMs stop near 1 bpb: a fifth of the gap from a unigram's 4.5-5 is never closed), and a small
# model's first steps down from the baseline are its hardest, so a loss needs less of the gap.
LEARNED = {"higher": 0.25, "lower": 0.10}

__all__ = ["ALPHA", "LEARNED", "Separation", "confidence", "paired_test", "separate"]


@dataclass(frozen=True)
class Separation:
    """One decision's winner against its runner-up on the same validation items."""

    decision: str  # "layer1.attention", "depth", or "pick of <k>" for a pick among whole archs
    winner: str  # the choice kept, as text
    runner_up: str  # the best of the others, as the decision ranked them
    winner_value: float  # the metric of each over the items
    runner_up_value: float
    p: float  # the two-sided p-value of the paired test
    test: str  # "McNemar" or "paired t"
    items: int  # how many validation items (scored targets) both were scored on
    separated: bool  # p < ALPHA and the winner is the better of the two on the metric
    worse: bool = False  # the winner scores worse: kept for a cost penalty or a constraint

    def describe(self) -> str:
        """e.g. `layer1.attention: performer over full, 0.2324 vs 0.2227, p = 0.41 (not separated)`."""
        verdict = "separated" if self.separated else "not separated"
        if self.worse:
            verdict += f"; {self.runner_up} scores better, {self.winner} was kept for cost or constraints"
        return (
            f"{self.decision}: {self.winner} over {self.runner_up}, {_value(self.winner_value)} vs "
            f"{_value(self.runner_up_value)}, {_p(self.p)} ({verdict})"
        )

    def to_dict(self) -> dict:
        """Plain types for margins.yaml."""
        return {
            "decision": self.decision,
            "winner": self.winner,
            "runner_up": self.runner_up,
            "winner_value": round(self.winner_value, 6),
            "runner_up_value": round(self.runner_up_value, 6),
            "p": float(f"{self.p:.4g}"),
            "test": self.test,
            "items": self.items,
            "separated": self.separated,
            "worse": self.worse,
        }


def paired_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    """The two-sided p-value of "a and b score the same", paired item by item, and the test's name.

    Args:
        a, b: (n,) per-item scores of two models on the same items, in the same order.

    Returns:
        (p, "McNemar") when every score is 0 or 1, else (p, "paired t"). Items on which the two
        agree carry no evidence either way: with no discordant item, or no difference at all,
        p is 1.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # (n,), (n,)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores must be two equal non-empty 1-D arrays, got {a.shape} and {b.shape}")
    if np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all():
        only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        if only_a + only_b == 0:
            return 1.0, "McNemar"
        return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue), "McNemar"
    difference = a - b  # (n,)
    if not difference.any():
        return 1.0, "paired t"
    if a.size < 2:
        return 1.0, "paired t"
    if np.ptp(difference) <= 1e-9 * np.abs(difference).max():  # the same difference on every item, up to
        return 0.0, "paired t"  # rounding: no noise at all, where the t statistic would divide by ~0
    return float(stats.ttest_rel(a, b).pvalue), "paired t"


def separate(
    decision: str,
    winner: str,
    runner_up: str,
    winner_items: Sequence[float],
    runner_up_items: Sequence[float],
    higher_is_better: bool,
    alpha: float = ALPHA,
) -> Separation:
    """Test a decision: `winner` was kept over `runner_up`; both scored per item on the same items.

    Separated means the paired test rejects "no difference" at `alpha` and the winner is the
    better one in the metric's direction (a winner kept on a tie-break or a cost penalty, with
    an equal or worse metric, is not separated, whatever the p-value).
    """
    w, r = np.asarray(winner_items, dtype=np.float64), np.asarray(runner_up_items, dtype=np.float64)  # (n,), (n,)
    p, test = paired_test(w, r)
    w_value, r_value = float(w.mean()), float(r.mean())
    better = w_value > r_value if higher_is_better else w_value < r_value
    worse = w_value < r_value if higher_is_better else w_value > r_value
    return Separation(decision, winner, runner_up, w_value, r_value, p, test, int(w.size), p < alpha and better, worse)


def confidence(
    separations: Sequence[Separation],
    metric_key: str,
    value: float,
    baseline: float | None,
    higher_is_better: bool,
) -> str:
    """The closing line: how many decisions are separated, and whether the search metric is far
    enough from the task's baseline (a model that ignores its input) for them to mean much.

    Args:
        separations: one per decision the final comparison made.
        metric_key: e.g. "search/val/acc", named in the line.
        value: the chosen arch's search metric.
        baseline: what an input-blind model scores on the task (`Task.baseline`); None: unknown.
        higher_is_better: the metric's direction; a perfect score is 1 up and 0 down.
    """
    if separations:
        kept = sum(s.separated for s in separations)
        items = max(s.items for s in separations)
        line = f"confidence: {kept} of {len(separations)} decisions separated (paired, p < {ALPHA:g}, {items} items)"
    else:
        kept, line = 0, "confidence: no decision was compared on validation items"
    learned = learned_fraction(value, baseline, higher_is_better)
    if learned is not None and learned < LEARNED["higher" if higher_is_better else "lower"]:
        return (
            f"{line}; {metric_key} {_value(value)} is near the task's baseline {_value(baseline)} "
            f"({max(learned, 0.0):.0%} of the way to a perfect score): the supernet has not learned the task, "
            "so its comparisons say little. Train it longer (trainer.max_epochs), compare on more items "
            "(search.eval_batches, a larger validation split) or share weights another way (sharing=)"
        )
    overruled = sum(s.worse and s.p < ALPHA for s in separations)  # a worse winner, clearly: cost or constraints
    if overruled:
        line += f"; {overruled} kept for cost or constraints over a clearly better runner-up"
    unseparated = len(separations) - kept - overruled
    if unseparated:
        if kept or overruled:
            others = "the rest are" if overruled else "the others are"
        else:
            others = "it is" if unseparated == 1 else "all are"
        line += (
            f"; {others} within noise: compare on more items (search.eval_batches, a larger "
            "validation split), or take them as choices that matter little"
        )
    return line


def learned_fraction(value: float, baseline: float | None, higher_is_better: bool) -> float | None:
    """How much of the gap from `baseline` to a perfect score (1 up, 0 down) `value` closes;
    None without a baseline, or when the baseline is already perfect."""
    if baseline is None or not math.isfinite(baseline):
        return None
    perfect = 1.0 if higher_is_better else 0.0
    if perfect == baseline:
        return None
    return (value - baseline) / (perfect - baseline)


def _value(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"


def _p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"
