"""What a search trades against its metric: the cost of an arch (nas.cost) at the task's length,
as DARTS/GDAS's penalty on the expected cost of their architecture distribution (as in FBNet,
https://arxiv.org/abs/1812.03443) and as evolution's objective and constraints; and the
penalties that push a distribution to decide (entropy; Fair DARTS's zero-one loss,
https://arxiv.org/abs/1911.12126).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from nas import cost
from nas.errors import ConfigError, excerpt
from nas.space import LAYER_FIELDS, Arch, LayerArch, SearchSpace
from nas.strategies.base import check_numbers

if TYPE_CHECKING:
    from nas.model import ModelShape


def check_kind(kind: object, field: str, optional: bool = False) -> None:
    """One line unless `kind` names a cost of `nas.cost` (or is None, when `optional`)."""
    if kind is None and optional:
        return
    if kind not in cost.KINDS:
        allowed = ", ".join((["null"] if optional else []) + list(cost.KINDS))
        raise ConfigError(f"{field}: unknown cost {excerpt(kind)}; allowed: {allowed}")


@dataclass(frozen=True)
class PenaltyConfig:
    """A differentiable search's cost penalty (`strategy.penalty.*`)."""

    cost: str | None = None  # params | flops | memory | latency, expected under the weights; null: none
    weight: float = 0.0  # the penalty's weight next to the validation loss
    target: float | None = None  # with a target only the excess over it is penalized (relative to it);
    # without, the expected cost relative to the largest arch's

    def __post_init__(self):
        check_kind(self.cost, "cost", optional=True)
        check_numbers("non-negative", weight=self.weight)
        check_numbers("positive", target=self.target)


class CostPenalty:
    """The costs of a space's archs at one sequence length, and the penalty on the configured kind.

    `attach` (once the model's shape is known) builds per layer choice (attention, heads, ffn)
    its cost, so that the cost expected under per-decision probabilities is a sum.
    """

    def __init__(self, config: PenaltyConfig, space: SearchSpace, seq_len: int | None = None):
        self.config, self.space, self.seq_len = config, space, seq_len
        self.shape: ModelShape | None = None

    @property
    def active(self) -> bool:
        """Whether the penalty adds anything (a cost and a weight)."""
        return self.config.cost is not None and bool(self.config.weight)

    def attach(self, shape: ModelShape) -> None:
        if shape == self.shape:  # attached already
            return
        if self.seq_len is not None and self.seq_len > shape.max_len:
            raise ConfigError(f"seq_len {self.seq_len} is longer than the model's maximum {shape.max_len}")
        self.shape, self.seq_len = shape, self.seq_len or shape.max_len
        kind, space = self.config.cost, self.space
        if kind is None:
            return
        table = torch.zeros(len(space.attention), len(space.heads), len(space.ffn_dims))
        for (a, cand), (h, heads), (f, ffn) in itertools.product(
            enumerate(space.attention), enumerate(space.heads), enumerate(space.ffn_dims)
        ):
            table[a, h, f] = cost.layer_cost(LayerArch(cand, heads, ffn), space, shape, self.seq_len, kind)
        self._layer_cost = table  # (attention, heads, ffn)
        self._base_cost = cost.base_cost(space, shape, self.seq_len, kind)
        self._reference = self.config.target or self.of(space.largest())

    def of(self, arch: Arch, kind: str | None = None) -> float:
        """The cost of `kind` (default: the configured one, else params) of one arch."""
        return float(cost.arch_cost(arch, self.space, self.shape, self.seq_len, kind or self.config.cost or "params"))

    def cheapest(self, kind: str) -> tuple[dict, float]:
        """The choices of every decision for the cheapest arch of `kind`, and its cost.

        Costs add over layers and none is negative, so the cheapest arch is the shallowest one
        made of the cheapest layer.
        """
        space = self.space
        layers = (LayerArch(a, h, f) for a in space.attention for h in space.heads for f in space.ffn_dims)
        layer = min(layers, key=lambda x: cost.layer_cost(x, space, self.shape, self.seq_len, kind))
        depth = min(space.depths)
        choices = {
            "depth": depth,
            **{f"layer{i}.{f}": getattr(layer, f) for i in range(space.max_depth) for f in LAYER_FIELDS},
        }
        return choices, self.of(Arch(depth, (layer,) * depth), kind)

    def expected(self, probs: dict[str, Tensor]) -> Tensor:
        """The configured cost expected under per-decision probabilities."""
        layers = [
            torch.einsum("a,h,f,ahf->", *(probs[f"layer{i}.{f}"] for f in LAYER_FIELDS), self._layer_cost)
            for i in range(self.space.max_depth)
        ]
        if self.config.cost == "memory" and self.space.memory.reversible:
            # backward recomputes one layer at a time: the pair plus the largest of the first d
            # layers, whatever d (cost.arch_cost), not their sum
            pair = cost.reversible_pair_mib(self.space, self.shape, self.seq_len)
            prefix = torch.cummax(torch.stack(layers), 0).values + pair
        else:
            prefix = torch.cumsum(torch.stack(layers), 0)  # cost of the first d layers
        depth_cost = torch.stack([prefix[d - 1] for d in self.space.depths])
        return self._base_cost + (probs["depth"] * depth_cost).sum()

    def __call__(self, probs: dict[str, Tensor]) -> Tensor:
        """The penalty of the expected cost (zero when inactive)."""
        if not self.active:
            return torch.zeros(())
        return self._weighted(self.expected(probs) / self._reference)

    def of_arch(self, arch: Arch) -> float:
        """The penalty of one arch: the penalty with all the probability on its choices."""
        return float(self._weighted(torch.tensor(self.of(arch) / self._reference)))

    def _weighted(self, relative: Tensor) -> Tensor:
        """The penalty of a cost relative to the reference (the target, or the largest arch's)."""
        return self.config.weight * (F.relu(relative - 1) if self.config.target else relative)


@dataclass(frozen=True)
class SharpenConfig:
    """Penalties that push each decision's distribution towards one choice (`strategy.sharpen.*`)."""

    entropy: float = 0.0  # weight of the decisions' mean entropy, minimized with the val loss
    zero_one: float = 0.0  # weight of Fair DARTS's zero-one loss: minus the mean of (p - 0.5)^2

    def __post_init__(self):
        check_numbers("non-negative", entropy=self.entropy, zero_one=self.zero_one)


def sharpen_penalty(config: SharpenConfig, probs: dict[str, Tensor]) -> Tensor:
    """The entropy and zero-one terms on the distributions (zero unless their weights are set)."""
    if not (config.entropy or config.zero_one):
        return torch.zeros(())
    probs = list(probs.values())
    entropy = torch.stack([-(p * torch.log(p.clamp_min(1e-12))).sum() for p in probs]).mean()
    zero_one = -torch.cat([(p - 0.5) ** 2 for p in probs]).mean()
    return config.entropy * entropy + config.zero_one * zero_one
