"""A short fine-tune of an arch's inherited weights before they are scored (`nas-rank
calibrate.steps=N`).

Weight sharing leaves each arch with weights trained for many archs at once; a few steps of the
arch alone move them towards its own optimum, so that the score says more about the arch and
less about what it shares. The same idea as re-estimating batch-norm statistics per arch before
scoring (Guo et al. 2020, SPOS), taken to the weights (Ning et al. 2021, "Evaluating Efficient
Performance Estimators of Neural Architectures", find few-step fine-tuning raises ranking
correlation). Every arch gets the same steps on the same batches from the same starting seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from nas.errors import check_number, check_whole
from nas.metrics import check_finite, task_loss


@dataclass(frozen=True)
class Calibration:
    """The fine-tune every arch gets before it is scored; steps 0: scored as inherited."""

    steps: int = 0  # AdamW steps on the task's training batches
    lr: float = 1.0e-3  # constant: a few steps have no room for a schedule
    gradient_clip_val: float = 1.0  # gradient norm clip (0: off)

    def __post_init__(self):
        check_whole(self.steps, "steps", 0)
        check_number(self.lr, "lr", "positive")  # lr 0 would score the archs as inherited
        check_number(self.gradient_clip_val, "gradient_clip_val", "non-negative")


def calibrate(
    model: nn.Module, batches: Callable[[], Iterable[dict]], calibration: Calibration, seed: int = 0
) -> nn.Module:
    """Train `model` in place for `calibration.steps` steps of the task loss and return it.

    Args:
        model: a standalone subnet holding the arch's inherited weights (`Supernet.extract`).
        batches: makes one pass over the training batches (e.g. `task.train_dataloader`); called
            again when a pass ends before the steps do.
        calibration: steps, learning rate and clipping.
        seed: seeds the batch order, so that every arch sees the same batches.
    """
    if not calibration.steps:
        return model
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=calibration.lr, weight_decay=0.0)
    model.train()
    torch.manual_seed(seed)
    step = 0
    while step < calibration.steps:
        for batch in batches():
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = task_loss(model(batch["tokens"], batch["mask"]), batch["target"])
            check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if calibration.gradient_clip_val:
                nn.utils.clip_grad_norm_(model.parameters(), calibration.gradient_clip_val)
            optimizer.step()
            step += 1
            if step == calibration.steps:
                break
    return model.eval()
