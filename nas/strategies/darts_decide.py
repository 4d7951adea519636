"""How a differentiable search turns its architecture weights into one arch, when the weights
alone do not decide: progressive shrinking of the candidate set (P-DARTS, Chen et al. 2019,
https://arxiv.org/abs/1904.12760), and at the end a discrete judgement with inherited weights (as
SPOS / DARTS-PT judge an op by the supernet's accuracy with it, https://arxiv.org/abs/2108.04392):
either the top-2 candidates of each decision compared on their own (`compare_top_two`), or every
remaining candidate, decision by decision, with the earlier decisions settled (`settle_in_turn`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from nas.errors import ConfigError, excerpt
from nas.evidence import Separation, separate
from nas.metrics import HIGHER_IS_BETTER, evaluate_items
from nas.results import Candidate, best_first
from nas.space import Arch, SearchSpace
from nas.strategies.base import check_numbers, check_wholes
from nas.supernet import Supernet


@dataclass(frozen=True)
class ShrinkConfig:
    """Progressive shrinking of the candidates (`strategy.shrink.*`)."""

    every: int = 0  # E > 0: after every E epochs past the warm-up each decision drops its least
    # probable remaining candidate (probability 0, no longer run by the supernet); 0: off
    to: int = 1  # shrinking stops when a decision has this many candidates left

    def __post_init__(self):
        check_wholes(0, every=self.every)
        check_wholes(1, to=self.to)


class Shrinker:
    """Drops candidates on schedule (`shrink`) and keeps the log of what it dropped."""

    def __init__(self, config: ShrinkConfig, warmup_epochs: int = 0):
        self.config, self.warmup_epochs = config, warmup_epochs
        self.log: list[dict] = []  # one record per dropped candidate, with its epoch

    def on_epoch_end(self, epoch: int, probs: dict[str, Tensor], keep: dict[str, Tensor]) -> None:
        """After `epoch` (from 0): drop from `keep` (in place) when shrinking is due."""
        trained = epoch + 1 - self.warmup_epochs  # epochs with architecture steps
        if self.config.every and trained > 0 and trained % self.config.every == 0:
            self.log += [{"epoch": epoch, **e} for e in shrink(probs, keep, self.config.to)]


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
        events.append(
            {
                "decision": key,
                "dropped": weakest,
                "p": float(p[weakest]),
                "cut": leader - float(p[weakest]),
                "left": int(mask.sum()),
            }
        )
    return events


class SupernetJudge:
    """Scores archs with the supernet's weights on fixed validation batches (each arch once) and
    compares two as every strategy breaks ties: metric, then validation loss, then cost (lower);
    `separation` tests a decision's winner against its runner-up on the same items.

    With a cost `penalty` (the search's own: what its architecture weights were trained to
    trade against the loss), two archs are compared by validation loss plus penalty instead
    (lower; then cost), so that the final decision keeps the trade the user asked for.

    With `violation` (by how much an arch misses the search's constraints, 0 within them), the
    arch that misses them by less is preferred first: an arch within them over any other."""

    def __init__(
        self,
        supernet: Supernet,
        batches: list[dict],
        metric: str,
        cost_of: Callable[[Arch], float],
        penalty: Callable[[Arch], float] | None = None,
        violation: Callable[[Arch], float] | None = None,
    ):
        self.supernet, self.batches, self.metric, self.cost_of = supernet, batches, metric, cost_of
        self.penalty, self.violation = penalty, violation
        self.scored: dict[Arch, dict[str, float]] = {}
        self.items: dict[Arch, np.ndarray] = {}  # per arch, the metric of each validation item

    def score(self, arch: Arch) -> dict[str, float]:
        """{"val/<metric>": value, "val/loss": loss} of `arch` on the batches (with a penalty also
        "val/loss+cost": the loss plus the penalty)."""
        if arch not in self.scored:
            value, loss, self.items[arch] = evaluate_items(self.supernet, self.batches, self.metric, arch)
            self.scored[arch] = {f"val/{self.metric}": value, "val/loss": loss}
            if self.penalty is not None:
                self.scored[arch]["val/loss+cost"] = loss + self.penalty(arch)
        return self.scored[arch]

    def prefers(self, rival: Arch, arch: Arch) -> bool:
        """Whether `rival` is strictly better than `arch` (a full tie keeps `arch`)."""
        if self.violation is not None and self.violation(rival) != self.violation(arch):
            return self.violation(rival) < self.violation(arch)
        if self.penalty is not None:
            return (self.score(rival)["val/loss+cost"], self.cost_of(rival)) < (
                self.score(arch)["val/loss+cost"],
                self.cost_of(arch),
            )
        # best_first is stable and `arch` is listed first, so a tie leaves it on top
        ranked = best_first(
            [Candidate(a, {**self.score(a), "cost": self.cost_of(a)}) for a in (arch, rival)], self.metric, "cost"
        )
        return ranked[0].arch == rival

    def separation(self, decision: str, kept: tuple[object, Arch], others: list[tuple[object, Arch]]) -> Separation:
        """The paired test of a decision: the kept (choice, arch) against the best of `others` by
        this judge's order (`nas.evidence.separate`, on the metric of each validation item)."""
        runner_up = others[0]
        for other in others[1:]:
            if self.prefers(other[1], runner_up[1]):
                runner_up = other
        for _, arch in (kept, runner_up):
            self.score(arch)  # cached: the rules scored both already
        winner, other = self.items[kept[1]], self.items[runner_up[1]]
        return separate(decision, str(kept[0]), str(runner_up[0]), winner, other, HIGHER_IS_BETTER[self.metric])


def _by_probability(p: Tensor) -> list[int]:
    """The indices of the choices still in the search (probability > 0), most probable first;
    sorted is stable, so ties keep the listed order (as argmax does)."""
    return sorted((i for i in range(len(p)) if float(p[i]) > 0.0), key=lambda i: -float(p[i]))


def _argmax_choices(space: SearchSpace, probs: dict[str, Tensor]) -> dict[str, object]:
    decisions = space.decisions()
    return {key: decisions[key][_by_probability(p)[0]] for key, p in probs.items()}


def _tried(choice, judge: SupernetJudge, arch: Arch) -> dict:
    """A candidate's record: its choice and scores, and under constraints by how much its arch
    misses them ("violation", `Constraints.violation`), so that a better-scoring candidate that
    was not kept says why."""
    over = judge.violation(arch) if judge.violation is not None else 0.0
    return {"choice": choice, **judge.score(arch), **({"violation": over} if over > 0 else {})}


# A constrained search's repair of a candidate: (every decision's choices, the decision whose
# choice is being tried) -> the same choices with the others moved as little as possible to meet
# the constraints (`Constraints.repair` with `keep`), or None when no move does
Fit = Callable[[dict, str], dict | None]


def _fitted(choices: dict, key: str, fit: Fit | None) -> dict:
    """`choices` as a decision's candidate is tried: within the constraints where `fit` finds a way
    (else as they are, and the judge's violation order ranks them last)."""
    return (fit(choices, key) if fit is not None else None) or choices


def compare_top_two(
    judge: SupernetJudge,
    space: SearchSpace,
    probs: dict[str, Tensor],
    start: dict | None = None,
    fit: Fit | None = None,
) -> tuple[Arch, dict[str, dict], tuple[Separation, ...]]:
    """Per decision, the argmax arch against the same arch with that decision's runner-up (every
    other decision at its argmax), each decision judged on its own; the runner-up is kept only
    when the judge prefers it.

    Args:
        probs: decision key -> probabilities; a choice with probability 0 (dropped) is never tried.
        start: every decision's choice to start from instead of the argmax (a constrained
            search's nearest arch within its constraints); each decision's rival is then its most
            probable other choice.
        fit: under constraints, how a rival that misses them is moved within them (`Fit`): the
            rival is then judged with the other decisions as `fit` moves them.

    Returns:
        The arch of the kept choices; per compared decision {"tried": [{"choice", "val/<metric>",
        "val/loss" (and "violation" for an arch over the constraints)} of the winner, then of the
        runner-up], "kept": choice}; and per compared
        decision the paired test of the kept choice against the other (`SupernetJudge.separation`).
        Decisions the argmax arch does not make (layers past its depth) are not compared.
    """
    decisions, argmax = space.decisions(), dict(start) if start else _argmax_choices(space, probs)
    base = space.arch_from_choices(argmax)
    kept, record, tests = dict(argmax), {}, []
    for key, p in probs.items():
        order = [i for i in _by_probability(p) if decisions[key][i] != argmax[key]]
        if not order:
            continue
        runner_up = decisions[key][order[0]]
        rival = space.arch_from_choices(_fitted({**argmax, key: runner_up}, key, fit))
        if rival == base:
            continue
        pair = [(argmax[key], base), (runner_up, rival)]
        if judge.prefers(rival, base):
            kept[key] = runner_up
            pair.reverse()
        record[key] = {
            "tried": [_tried(argmax[key], judge, base), _tried(runner_up, judge, rival)],
            "kept": kept[key],
        }
        tests.append(judge.separation(key, pair[0], pair[1:]))
    return space.arch_from_choices(kept), record, tuple(tests)


MAX_PASSES = 3  # a pass that changes nothing ends the search sooner; each pass is cheap (cached archs)


def settle_in_turn(
    judge: SupernetJudge,
    space: SearchSpace,
    probs: dict[str, Tensor],
    start: dict | None = None,
    fit: Fit | None = None,
) -> tuple[Arch, dict[str, dict], tuple[Separation, ...]]:
    """A coordinate search on the supernet from the argmax arch, as DARTS-PT settles one edge at a
    time by the supernet's accuracy (https://arxiv.org/abs/2108.04392; here without its fine-tuning
    between edges): decision by decision, in the space's order, every remaining candidate is tried
    with the other decisions as settled so far, and the judge's favourite is kept (the settled
    choice on a full tie). Passes repeat until one changes nothing, at most MAX_PASSES.

    Where `compare_top_two` judges each decision against the argmax arch alone, here a decision
    sees the choices made before it (a depth decided with the attention that layer 0 will have),
    and a candidate the weights ranked third or lower is tried too. `start`: every decision's
    choice to start from instead of the argmax (as in `compare_top_two`). `fit`: under
    constraints, a candidate that misses them with the others as settled is tried with the others
    moved within them (`Fit`), and kept with those moves: else a budget spent by an early
    decision's choice would rule out a better choice of a later one for good.

    Returns:
        The arch, and per decision it makes {"tried": [{"choice", "val/<metric>", "val/loss"} of
        the choice settled before the pass, then of the others, most probable first], "kept": choice}
        from the last pass (after a pass without change: every other decision at its final choice),
        and per such decision the paired test of the kept choice against the best of the others
        (`SupernetJudge.separation`).
    """
    decisions, choices = space.decisions(), dict(start) if start else _argmax_choices(space, probs)
    record: dict[str, dict] = {}
    tests: list[Separation] = []
    for _ in range(MAX_PASSES):
        record, tests, changed = {}, [], False
        for key, p in probs.items():
            current = space.arch_from_choices(choices)
            tried = {
                decisions[key][i]: _fitted({**choices, key: decisions[key][i]}, key, fit)
                for i in _by_probability(p)
                if decisions[key][i] != choices[key]
            }
            rivals = [(choice, space.arch_from_choices(tried[choice])) for choice in tried]
            rivals = [(choice, arch) for choice, arch in rivals if arch != current]  # a layer past the depth
            if not rivals:
                continue
            best_choice, best = choices[key], current
            for choice, arch in rivals:
                if judge.prefers(arch, best):
                    best_choice, best = choice, arch
            record[key] = {
                "tried": [
                    _tried(choices[key], judge, current),
                    *(_tried(choice, judge, arch) for choice, arch in rivals),
                ],
                "kept": best_choice,
            }
            entries = [(choices[key], current), *rivals]
            tests.append(judge.separation(key, (best_choice, best), [e for e in entries if e[1] != best]))
            changed |= best_choice != choices[key]
            if best_choice != choices[key]:
                choices = tried[best_choice]  # with the moves that keep it within the constraints
        if not changed:
            break
    return space.arch_from_choices(choices), record, tuple(tests)


# strategy.decide.rule -> how the final arch is settled from the weights (None: their argmax alone)
DECIDE = {"greedy": settle_in_turn, "top2": compare_top_two, "argmax": None}


@dataclass(frozen=True)
class DecideConfig:
    """How a differentiable search takes its final arch (`strategy.decide.*`)."""

    rule: str = "greedy"  # greedy (decision by decision, the supernet's val metric picks among all
    # remaining candidates, earlier decisions settled), top2 (each decision's top two compared
    # against the argmax arch alone) or argmax (the architecture weights alone)
    min_margin: float = 0.05  # the pipeline warns when a decision's final winner-minus-runner-up
    # margin is below this

    def __post_init__(self):
        if self.rule not in DECIDE:
            raise ConfigError(f"rule={excerpt(self.rule)}: allowed: {', '.join(DECIDE)}")
        check_numbers("probability", min_margin=self.min_margin)  # a difference of two probabilities


class DecideRule:
    """The configured rule: `judges` unless it is the weights' argmax; called with a judge, it
    returns the arch, the comparisons it made and their paired tests (see `compare_top_two`,
    `settle_in_turn`)."""

    def __init__(self, config: DecideConfig):
        self.config = config
        self.settle = DECIDE[config.rule]

    @property
    def judges(self) -> bool:
        return self.settle is not None

    def __call__(
        self,
        judge: SupernetJudge,
        space: SearchSpace,
        probs: dict[str, Tensor],
        start: dict | None = None,
        fit: Fit | None = None,
    ) -> tuple[Arch, dict[str, dict], tuple[Separation, ...]]:
        return self.settle(judge, space, probs, start, fit)
