"""Evaluate an arch with the supernet's inherited weights on a fixed list of batches."""
from __future__ import annotations

import torch

from nas.space import Arch
from nas.training.metrics import task_metric


@torch.no_grad()
def evaluate(supernet, arch: Arch, batches: list[dict], metric: str) -> float:
    """The metric averaged over `batches`, weighted by their scored targets."""
    was_training = supernet.training
    supernet.eval()
    total, count = 0.0, 0
    device = next(supernet.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = supernet(batch["tokens"], arch, batch["mask"])
        scored = int((batch["target"] != -100).sum())
        total += float(task_metric(logits, batch["target"], metric)) * scored
        count += scored
    supernet.train(was_training)
    return total / count
