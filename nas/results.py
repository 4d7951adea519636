"""What a search returns: the evaluated candidates, the chosen arch, and the Pareto front of
metric against cost (Deb et al. 2002's non-domination, https://doi.org/10.1109/4235.996017).

One implementation of the front, used by the strategies (evolution), TensorBoard and the plots;
one best-first order, used by every strategy and by `nas-rank` for the supernet's pick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from nas.metrics import score
from nas.space import Arch


@dataclass
class Candidate:
    """One evaluated architecture."""

    arch: Arch  # the architecture
    metrics: dict[str, float]  # e.g. {"val/acc": 0.9, "cost/params": 1e5}


@dataclass
class SearchResult:
    """A strategy's answer."""

    best: Arch  # the chosen architecture
    ranked: list[Candidate] = field(default_factory=list)  # evaluated candidates, best first
    pareto: list[Candidate] = field(default_factory=list)  # non-dominated (metric vs cost), if any


def best_first(candidates: list[Candidate], metric: str, cost_key: str = "cost/params") -> list[Candidate]:
    """The candidates sorted best first by `val/<metric>`; ties (common: inherited scores saturate)
    go to the lower `val/loss`, then to the lower cost, never to the order they were sampled in.
    A candidate without a loss or a cost sorts after those with one on that key."""
    order = best_first_order(
        [score(c.metrics[f"val/{metric}"], metric) for c in candidates],
        [c.metrics.get("val/loss", math.inf) for c in candidates],
        [c.metrics.get(cost_key, math.inf) for c in candidates],
    )
    return [candidates[i] for i in order]


def best_first_order(
    scores: Sequence[float], losses: Sequence[float] | None = None, costs: Sequence[float] | None = None
) -> list[int]:
    """The rule of `best_first` on plain lists (`nas.ranking.supernet_order` uses it too).

    Args:
        scores: one per arch, higher is better (`metrics.score` turns a metric into one).
        losses: the first tie-break, lower first; None: no tie-break on loss.
        costs: the second tie-break, lower first; None: no tie-break on cost.

    Returns:
        The indices best first; archs that tie on all three keep their order (the sort is stable).
    """
    loss = losses if losses is not None else [0.0] * len(scores)
    cost = costs if costs is not None else [0.0] * len(scores)
    return sorted(range(len(scores)), key=lambda i: (-scores[i], loss[i], cost[i]))


def pareto_front(
    candidates: list[Candidate], metric_key: str, cost_key: str, higher_is_better: bool = True
) -> list[Candidate]:
    """The candidates that no other candidate beats on both metric and cost, cheapest first.

    A candidate dominates another when it is as good in both and better in one; candidates
    that tie on both stay (both are non-dominated). Ties in cost keep the input order.

    Args:
        candidates: each with `metric_key` and `cost_key` in its metrics.
        metric_key, cost_key: e.g. "val/acc" and "cost/params"; cost is minimized.
        higher_is_better: the metric's direction (False for bits per byte).
    """
    sign = 1.0 if higher_is_better else -1.0

    def dominates(a: Candidate, b: Candidate) -> bool:
        ma, mb = sign * a.metrics[metric_key], sign * b.metrics[metric_key]
        ca, cb = a.metrics[cost_key], b.metrics[cost_key]
        return ma >= mb and ca <= cb and (ma > mb or ca < cb)

    front = [c for c in candidates if not any(dominates(other, c) for other in candidates)]
    return sorted(front, key=lambda c: c.metrics[cost_key])
