"""Temperatures annealed linearly over a search's epochs: DARTS's softmax over the architecture
logits, GDAS's Gumbel-softmax (Dong & Yang 2019, https://arxiv.org/abs/1910.04465).
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.strategies.base import check_numbers


@dataclass(frozen=True)
class TemperatureConfig:
    """A temperature annealed linearly from `start` to `end` over the epochs."""

    start: float = 1.0  # during the first epoch
    end: float = 1.0  # from the last epoch on (start = end: constant)

    def __post_init__(self):
        check_numbers("positive", start=self.start, end=self.end)  # 0 divides the logits by zero


class TemperatureSchedule:
    """The temperature for the epoch after `done` of `max_epochs`: `end` is reached in the last."""

    def __init__(self, config: TemperatureConfig):
        self.config = config

    def after(self, done: int, max_epochs: int) -> float:
        progress = min(1.0, done / max(1, max_epochs - 1))
        return self.config.start + (self.config.end - self.config.start) * progress
