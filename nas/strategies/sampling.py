"""How sampling strategies train the shared weights in one step: strictly fair paths (FairNAS,
Chu et al. 2021, https://arxiv.org/abs/1907.01845) and the sandwich rule with in-place
distillation (BigNAS, Yu et al. 2020, https://arxiv.org/abs/2003.11142), for any strategy that
picks paths (random, evolution, ENAS).
# C classes
"""

from __future__ import annotations

import math
import random

from torch import Tensor

from nas.errors import ConfigError
from nas.metrics import distillation_loss
from nas.space import Arch, SearchSpace
from nas.strategies.base import SearchContext, check_numbers


def fair_paths(space: SearchSpace, rng: random.Random) -> list[Arch]:
    """m paths, m = the most choices any decision has, such that each decision's choices are
    spread evenly over them: every choice exactly m / c times when its c choices divide m
    (FairNAS's "each candidate once" when every layer has m candidates), else floor or ceil.

    A layer past a path's depth does not run in it, so strict fairness holds for the layers
    every path has (below the smallest depth); depth itself is spread evenly like any decision.
    """
    decisions = space.decisions()
    m = max(len(choices) for choices in decisions.values())
    columns = {}
    for key, choices in decisions.items():
        column = (rng.sample(choices, len(choices)) * math.ceil(m / len(choices)))[:m]
        rng.shuffle(column)
        columns[key] = column
    return [space.arch_from_choices({key: column[j] for key, column in columns.items()}) for j in range(m)]


def check_options(sandwich: bool, distill: float) -> None:
    """One-line errors for the shared-weight training options of a sampling strategy (named as
    in its config; `build_config` puts `strategy.` in front)."""
    check_numbers("probability", distill=distill)
    if distill and not sandwich:
        raise ConfigError("distill needs strategy.sandwich=true: the largest arch is the teacher")


def train_paths(
    ctx: SearchContext, batch: dict, archs: list[Arch], space: SearchSpace, sandwich: bool = False, distill: float = 0.0
) -> dict[str, Tensor]:
    """Sum the losses of `archs` on one batch (with `sandwich`, also the largest and smallest
    arch; with `distill`, sampled paths also learn the largest arch's predictions), backward
    once, one optimizer step: the gradient is the sum of the per-path gradients.

    Returns:
        logs: "loss", the mean loss of `archs` (the largest arch's under `sandwich`).
    """
    total, teacher, logs = 0, None, {}
    if sandwich:
        big_loss, big_logits = ctx.arch_loss(batch, space.largest())
        total, teacher = big_loss, big_logits.detach()
        logs["loss"] = big_loss.detach()
        archs = [space.smallest(), *archs]
    sampled = []
    for arch in archs:
        loss, logits = ctx.arch_loss(batch, arch)
        sampled.append(loss.detach())
        if distill:
            loss = (1 - distill) * loss + distill * distillation_loss(logits, teacher, batch["target"])
        total = total + loss
    ctx.step(total)
    logs.setdefault("loss", sum(sampled) / len(sampled))
    return logs
