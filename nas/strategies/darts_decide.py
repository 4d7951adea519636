"""How a differentiable search turns its architecture weights into one arch, when the weights
alone do not decide: progressive shrinking of the candidate set (P-DARTS, Chen et al. 2019,
https://arxiv.org/abs/1904.12760) and a final discrete comparison
of the top-2 candidates per decision with inherited weights (as SPOS / DARTS-PT judge an op by
the supernet's accuracy with it, https://arxiv.org/abs/2108.04392).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from nas.metrics import evaluate_with_loss
from nas.results import Candidate, best_first
from nas.space import Arch, SearchSpace
from nas.supernet import Supernet


def shrink(probs: dict[str, Tensor], keep: dict[str, Tensor], shrink_to: int) -> list[dict]:
    """Drop the weakest remaining candidate of every decision that has more than `shrink_to`.

    Args:
        probs: decision key -> probabilities over its choices (0 where already dropped).
        keep: decision key -> bool mask of the remaining choices; updated in place.
        shrink_to: the number of candidates a decision keeps at least.

    Returns:
        One record per drop: decision, index dropped, its probability and the margin by which
        the remaining leader led it ("cut": for the last drop the decision's final margin).
    """
    events = []
    for key, p in probs.items():
        p, mask = p.detach(), keep[key]
        if int(mask.sum()) <= shrink_to:
            continue
        remaining = p.masked_fill(~mask, float("inf"))  # dropped ones are never the weakest
        weakest = int(remaining.argmin())  # ties: the first listed goes
        mask[weakest] = False
        leader = float(p.masked_fill(~mask, -1.0).max())
        events.append({"decision": key, "dropped": weakest, "p": float(p[weakest]),
                       "cut": leader - float(p[weakest]), "left": int(mask.sum())})
    return events


def compare_top_two(supernet: Supernet, space: SearchSpace, probs: dict[str, Tensor], batches: list[dict],
                    metric: str, cost_of: Callable[[Arch], float]) -> tuple[Arch, dict[str, dict]]:
    """Per decision, the arch with its most probable choice against the same arch with its
    runner-up (every other decision at its argmax), both scored by the supernet's weights on
    `batches`; the runner-up is kept only when strictly better by metric, then validation loss,
    then cost (lower).

    Args:
        probs: decision key -> probabilities; a choice with probability 0 (dropped) is never
            compared.
        cost_of: an arch's cost, the last tie-breaker.

    Returns:
        The arch of the kept choices, and per compared decision
        {"winner": {"choice", "val/<metric>", "val/loss"}, "runner_up": {...}, "kept": choice}.
        Decisions the argmax arch does not make (layers past its depth) are not compared.
    """
    decisions = space.decisions()
    # most probable first; sorted is stable, so ties keep the listed order (as argmax does)
    order = {key: sorted(range(len(p)), key=lambda i: -float(p[i])) for key, p in probs.items()}
    argmax = {key: decisions[key][o[0]] for key, o in order.items()}
    base = space.arch_from_choices(argmax)
    scored: dict[Arch, dict[str, float]] = {}

    def measure(arch: Arch) -> dict[str, float]:
        if arch not in scored:
            value, loss = evaluate_with_loss(supernet, batches, metric, arch)
            scored[arch] = {f"val/{metric}": value, "val/loss": loss}
        return scored[arch]

    def better(rival: Arch, arch: Arch) -> bool:  # strictly: best_first is stable, `arch` listed first
        ranked = best_first([Candidate(a, {**measure(a), "cost": cost_of(a)}) for a in (arch, rival)], metric, "cost")
        return ranked[0].arch == rival

    kept, record = dict(argmax), {}
    for key, o in order.items():
        if len(o) < 2 or float(probs[key][o[1]]) == 0.0:
            continue
        rival = space.arch_from_choices({**argmax, key: decisions[key][o[1]]})
        if rival == base:
            continue
        if better(rival, base):
            kept[key] = decisions[key][o[1]]
        record[key] = {"winner": {"choice": argmax[key], **measure(base)},
                       "runner_up": {"choice": decisions[key][o[1]], **measure(rival)}, "kept": kept[key]}
    return space.arch_from_choices(kept), record
