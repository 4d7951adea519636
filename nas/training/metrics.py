"""The metric's direction and the non-finite-loss guard, shared by search, retraining and
evaluation; the loss and metric themselves are the tasks' (nas.tasks.base)."""
from __future__ import annotations

import torch
from torch import Tensor

from nas.tasks.base import task_loss, task_metric

__all__ = ["HIGHER_IS_BETTER", "check_finite", "score", "task_loss", "task_metric"]

HIGHER_IS_BETTER = {"acc": True, "bpb": False}


def score(value: float, metric: str) -> float:
    """Higher is better, whatever the metric."""
    return value if HIGHER_IS_BETTER[metric] else -value


def check_finite(loss: Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss ({loss.item()}) at training step {step}; "
                                 "the last good checkpoint is kept")
