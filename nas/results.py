"""What a search returns: the evaluated candidates, the chosen arch, and the Pareto front of
metric against cost (Deb et al. 2002's non-domination, https://doi.org/10.1109/4235.996017).

One implementation of the front, used by the strategies (evolution), TensorBoard and the plots.
"""
from __future__ import annotations

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
    def key(c: Candidate) -> tuple[float, float, float]:
        return (-score(c.metrics[f"val/{metric}"], metric), c.metrics.get("val/loss", float("inf")),
                c.metrics.get(cost_key, float("inf")))
    return sorted(candidates, key=key)


def pareto_front(candidates: list[Candidate], metric_key: str, cost_key: str,
                 higher_is_better: bool = True) -> list[Candidate]:
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
