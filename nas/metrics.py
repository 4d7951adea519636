"""How a model is scored: the task loss, the task metric and its direction, the one evaluation
loop over batches, the soft cross-entropy of distillation, and the non-finite-loss guard.

Classes and tokens are scored by cross-entropy, accuracy and bits per byte; a forecast (a float
target: real values, (b, H, channels)) by the squared error (the loss and `mse`) and `mae`.

Search, retraining, strategies and export all score through this module, so that a metric
means the same thing wherever it is logged. Distillation follows Hinton et al. 2015
(https://arxiv.org/abs/1503.02531) at temperature 1, as TinyBERT and BigNAS use it.
# b batch, n sequence, C classes
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.space import Arch

IGNORE_INDEX = -100  # target of positions that are not scored (PyTorch's cross-entropy default)
METRICS = ("acc", "bpb", "mse", "mae")
HIGHER_IS_BETTER = {"acc": True, "bpb": False, "mse": False, "mae": False}  # accuracy up, the others down
COMPANIONS = {"mse": ("mae",)}  # reported beside a task's metric (logged, tested, exported), never chosen on

__all__ = [
    "COMPANIONS",
    "HIGHER_IS_BETTER",
    "IGNORE_INDEX",
    "METRICS",
    "check_finite",
    "distillation_loss",
    "evaluate",
    "evaluate_each",
    "evaluate_many",
    "evaluate_items",
    "evaluate_with_loss",
    "item_metric",
    "score",
    "soft_cross_entropy",
    "task_loss",
    "task_metric",
]


def task_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over scored targets (targets equal to IGNORE_INDEX are skipped); for a
    forecast (a float target) the mean squared error.

    Shape: logits (b, C) with target (b,), or logits (b, n, C) with target (b, n); a forecast
    (b, H, channels) with a target of the same shape.
    """
    if target.is_floating_point():
        return F.mse_loss(logits.float(), target.float())
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE_INDEX)


def task_metric(logits: Tensor, target: Tensor, metric: str) -> Tensor:
    """Accuracy ("acc") or bits per byte ("bpb": cross-entropy / ln 2) over scored targets.

    Shape: as `task_loss`. Returns a scalar; weight it by `scored(target)` to average exactly
    over batches of different sizes (what `evaluate` does). A forecast's metric is "mse" or
    "mae", the mean squared or absolute error over every step and channel.
    """
    return item_metric(logits, target, metric).mean()


def item_metric(logits: Tensor, target: Tensor, metric: str) -> Tensor:
    """The metric of each scored target on its own (1 or 0 for "acc", bits for "bpb", the
    squared or absolute error of each forecast value), whose mean is `task_metric`: what
    paired tests between two archs compare (`nas.evidence`).

    Shape: as `task_loss`; returns (scored,).
    """
    if target.is_floating_point() or metric in ("mse", "mae"):
        if not (target.is_floating_point() and metric in ("mse", "mae")):
            raise ConfigError(
                f"metric '{metric}' does not score {'a forecast' if target.is_floating_point() else 'classes'}"
            )
        error = (logits.float() - target.float()).reshape(-1)  # (scored,)
        return error.square() if metric == "mse" else error.abs()
    flat_target = target.reshape(-1)
    keep = flat_target != IGNORE_INDEX
    flat_logits = logits.reshape(-1, logits.shape[-1])[keep].float()  # (scored, C)
    flat_target = flat_target[keep]
    if metric == "acc":
        return (flat_logits.argmax(-1) == flat_target).float()
    if metric == "bpb":
        return F.cross_entropy(flat_logits, flat_target, reduction="none") / math.log(2)
    raise ConfigError(f"unknown metric '{metric}'; allowed: {', '.join(METRICS)}")


def scored(target: Tensor) -> int:
    """How many targets of a batch are scored: every value of a forecast."""
    if target.is_floating_point():
        return target.numel()
    return int((target != IGNORE_INDEX).sum())


def score(value: float, metric: str) -> float:
    """Higher is better, whatever the metric."""
    if metric not in HIGHER_IS_BETTER:
        raise ConfigError(f"unknown metric '{metric}'; allowed: {', '.join(METRICS)}")
    return value if HIGHER_IS_BETTER[metric] else -value


def soft_cross_entropy(logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
    """Cross-entropy of `logits` against the teacher's softmax, averaged over scored positions.

    Shape: logits and teacher_logits (b, C) or (b, n, C); target (b,) or (b, n), optional: with
    it, positions whose target is IGNORE_INDEX are left out (per-token tasks score a few).
    """
    per_position = -(F.softmax(teacher_logits.float(), -1) * F.log_softmax(logits.float(), -1)).sum(-1)  # (b[, n])
    if target is None:
        return per_position.mean()
    return per_position[target != IGNORE_INDEX].mean()


def distillation_loss(logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
    """What a student learns from its teacher: `soft_cross_entropy` for classes and tokens, and
    for a forecast (a float target) the mean squared error to the teacher's forecast."""
    if target is not None and target.is_floating_point():
        return F.mse_loss(logits.float(), teacher_logits.float())
    return soft_cross_entropy(logits, teacher_logits, target)


def check_finite(loss: Tensor, step: int) -> None:
    """Stop a run whose loss is NaN or infinite (the last good checkpoint stays)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite loss ({loss.item()}) at training step {step}; the last good checkpoint is kept"
        )


@torch.no_grad()
def evaluate_many(
    models: Mapping[str, nn.Module], batches: Iterable[dict], metric: str, arch: Arch | None = None
) -> dict[str, float]:
    """The task metric of each model over all batches (iterated once, so a generator works).

    Batch means are weighted by their scored targets, which makes both accuracy and bits per
    byte exact over the whole set. Each model runs in eval mode and gets its mode back.

    Args:
        models: name -> a module mapping (tokens, mask) to logits, or (tokens, arch, mask)
            when `arch` is given (a supernet).
        batches: dicts with `tokens`, `mask` and `target`, moved to each model's device.
        metric: "acc" or "bpb", or "loss" for the task loss (`task_loss`).
        arch: the architecture a supernet runs.
    """
    scores = _weighted_means(models, batches, (metric,), arch)
    return {name: values[metric] for name, values in scores.items()}


def evaluate_each(
    models: Mapping[str, nn.Module], batches: Iterable[dict], metrics: tuple[str, ...], arch: Arch | None = None
) -> dict[str, dict[str, float]]:
    """Several metrics of each model in one pass ({name: {metric: value}}); see `evaluate_many`."""
    return _weighted_means(models, batches, tuple(metrics), arch)


def evaluate(model: nn.Module, batches: Iterable[dict], metric: str, arch: Arch | None = None) -> float:
    """The task metric of one model over `batches`; see `evaluate_many`."""
    return evaluate_many({"model": model}, batches, metric, arch)["model"]


def evaluate_with_loss(
    model: nn.Module, batches: Iterable[dict], metric: str, arch: Arch | None = None
) -> tuple[float, float]:
    """(metric, loss) of one model over `batches` in one pass; see `evaluate_many`."""
    scores = _weighted_means({"model": model}, batches, (metric, "loss"), arch)["model"]
    return scores[metric], scores["loss"]


def evaluate_items(
    model: nn.Module, batches: Iterable[dict], metric: str, arch: Arch | None = None
) -> tuple[float, float, np.ndarray]:
    """(metric, loss, items) of one model over `batches` in one pass: the metric and the loss as
    `evaluate_with_loss` gives them, and (scored,) the `item_metric` of every scored target in
    batch order, which paired tests between archs scored on the same batches compare."""
    items: list[Tensor] = []
    scores = _weighted_means({"model": model}, batches, (metric, "loss"), arch, items)["model"]
    return scores[metric], scores["loss"], torch.cat(items).double().numpy()


@torch.no_grad()
def _weighted_means(
    models: Mapping[str, nn.Module],
    batches: Iterable[dict],
    metrics: tuple[str, ...],
    arch: Arch | None,
    items: list[Tensor] | None = None,  # given: each batch's `item_metric` of the first metric is appended
) -> dict[str, dict[str, float]]:
    for metric in metrics:
        if metric != "loss":
            score(0.0, metric)  # one line for an unknown metric, before any batch runs
    modes = {name: model.training for name, model in models.items()}
    totals, count = {name: dict.fromkeys(metrics, 0.0) for name in models}, 0
    try:
        for batch in batches:
            weight = scored(batch["target"])
            if not weight:
                continue  # its mean would be NaN, and it carries no weight anyway
            for name, model in models.items():
                first = next(iter(model.parameters()), None)
                on = {k: v.to(first.device) for k, v in batch.items()} if first is not None else batch
                args = (on["tokens"], arch, on["mask"]) if arch is not None else (on["tokens"], on["mask"])
                logits = model.eval()(*args)
                for metric in metrics:
                    if metric == "loss":
                        totals[name][metric] += float(task_loss(logits, on["target"])) * weight
                        continue
                    per_item = item_metric(logits, on["target"], metric)  # (scored,)
                    # summed in double: archs with as many right answers tie exactly, whatever the batches
                    totals[name][metric] += float(per_item.double().sum())
                    if items is not None and metric == metrics[0]:
                        items.append(per_item.cpu())
            count += weight
    finally:
        for name, model in models.items():
            model.train(modes[name])
    if count == 0:
        raise ConfigError("the evaluation batches hold no scored targets")
    return {name: {m: total / count for m, total in values.items()} for name, values in totals.items()}
