"""Hard limits on the costs of the arch a search returns (`strategy.constraints`, {cost kind:
maximum}, e.g. {exact_layers: 1, state_mib: 0.5}), which every strategy honours in its final pick:
random search, ENAS and evolution choose among the archs that meet them, DARTS and GDAS decide
among them (`repair` moves their weights' choice to the nearest arch that does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from nas import cost
from nas.errors import ConfigError, check_number
from nas.space import LAYER_FIELDS, Arch, LayerArch, SearchSpace
from nas.strategies.penalties import CostPenalty, PenaltyConfig, check_kind

if TYPE_CHECKING:
    from nas.model import ModelShape


def check_constraints(constraints: dict | None) -> None:
    """One line unless every key is a cost kind and every limit a finite number > 0 (>= 0 for
    exact_layers: no exact attention at all), for a config's `__post_init__`."""
    for kind, limit in (constraints or {}).items():
        check_kind(kind, "constraints")
        check_number(limit, f"constraints.{kind}", "non-negative" if kind == "exact_layers" else "positive")


class Constraints:
    """The limits of a search at one sequence length: which archs meet them, and by how much the
    others miss. False when there are none (every arch is feasible)."""

    def __init__(self, limits: dict[str, float] | None, space: SearchSpace, seq_len: int | None = None):
        self.limits = {kind: float(limit) for kind, limit in (limits or {}).items()}
        self.space = space
        self.costs = CostPenalty(PenaltyConfig(), space, seq_len)  # every use names its kind

    def __bool__(self) -> bool:
        return bool(self.limits)

    def attach(self, shape: ModelShape) -> None:
        """Take costs at the model's shape; one line, before any training, if the cheapest arch of
        the space misses a limit (then none meets it)."""
        self.costs.attach(shape)
        for kind, limit in self.limits.items():
            choices, cheapest = self.costs.cheapest(kind)
            if cheapest > limit:
                layer = LayerArch(*(choices[f"layer0.{f}"] for f in LAYER_FIELDS))
                raise ConfigError(
                    f"no arch in space '{self.space.name}' meets constraints.{kind} <= {limit:g}: the "
                    f"cheapest, {choices['depth']} x ({layer.attention}, heads={layer.heads}, "
                    f"ffn_dim={layer.ffn_dim}), costs {cheapest:g} {cost.UNITS[kind]} at seq_len {self.costs.seq_len}"
                )

    def spent(self, arch: Arch) -> dict[str, float]:
        """The arch's cost of every constrained kind."""
        return {kind: self.costs.of(arch, kind) for kind in self.limits}

    def feasible(self, arch: Arch) -> bool:
        return all(spent <= self.limits[kind] for kind, spent in self.spent(arch).items())

    def violation(self, arch: Arch) -> float:
        """How far the arch misses the limits: the sum of each excess relative to its limit (the
        excess itself for a limit of 0); 0 for an arch that meets them."""
        over = 0.0
        for kind, spent in self.spent(arch).items():
            limit = self.limits[kind]
            if spent > limit:
                over += (spent - limit) / limit if limit > 0 else spent
        return over

    def describe(self) -> str:
        return ", ".join(f"{kind} <= {limit:g}" for kind, limit in self.limits.items())

    def refusal(self, what: str) -> ConfigError:
        """The one line when a strategy found no arch that meets the limits."""
        return ConfigError(f"{what} meets the constraints ({self.describe()}); loosen them or search longer")

    def cheapest_feasible(self) -> list[Arch]:
        """The cheapest arch of each constrained kind (`CostPenalty.cheapest`) that meets every limit."""
        archs = (self.space.arch_from_choices(self.costs.cheapest(kind)[0]) for kind in self.limits)
        return [arch for arch in dict.fromkeys(archs) if self.feasible(arch)]

    def repair(self, choices: dict, probs: dict[str, Tensor], keep: str | None = None) -> dict | None:
        """`choices` (every decision's, as the weights' argmax gives them) changed one decision at a
        time until the arch meets the limits, or None if no change brings it closer. The decision
        `keep` is never changed (a decide rule trying one of its candidates within the limits).

        Each change is the one that lowers the violation and keeps the most probability (the
        highest probability of the new choice over the old one's; ties: the larger drop in the
        violation, then the earlier decision). Layers' choices change first, the depth only once
        they cannot (a budget on the mix swaps ops before it drops layers). A choice of
        probability 0 (dropped by shrinking) is never taken.
        """
        decisions, choices = self.space.decisions(), dict(choices)
        over = self.violation(self.space.arch_from_choices(choices))
        movable = [k for k in decisions if k != keep]
        for keys in ([k for k in movable if k != "depth"], movable):
            while over > 0:
                best = None  # (probability ratio, drop in violation), key, choice, violation
                for order, key in enumerate(keys):
                    p = probs[key]
                    now = float(p[decisions[key].index(choices[key])])
                    for i, option in enumerate(decisions[key]):
                        if option == choices[key] or float(p[i]) <= 0:
                            continue
                        after = self.violation(self.space.arch_from_choices({**choices, key: option}))
                        if after >= over:
                            continue
                        rank = (float(p[i]) / max(now, 1e-30), over - after, -order)
                        if best is None or rank > best[0]:
                            best = (rank, key, option, after)
                if best is None:
                    break
                _, key, option, over = best
                choices[key] = option
        return choices if over == 0 else None
