"""How a model is scored: the task loss, the task metric and its direction, the one evaluation
loop over batches, the soft cross-entropy of distillation, and the non-finite-loss guard.

Search, retraining, strategies and export all score through this module, so that a metric
means the same thing wherever it is logged. Distillation follows Hinton et al. 2015
(https://arxiv.org/abs/1503.02531) at temperature 1, as TinyBERT and BigNAS use it.
# b batch, n sequence, C classes
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.space import Arch

IGNORE_INDEX = -100  # target of positions that are not scored (PyTorch's cross-entropy default)
METRICS = ("acc", "bpb")
HIGHER_IS_BETTER = {"acc": True, "bpb": False}  # accuracy up, bits per byte down

__all__ = [
    "HIGHER_IS_BETTER",
    "IGNORE_INDEX",
    "METRICS",
    "check_finite",
    "evaluate",
    "evaluate_many",
    "evaluate_with_loss",
    "score",
    "soft_cross_entropy",
    "task_loss",
    "task_metric",
]


def task_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over scored targets (targets equal to IGNORE_INDEX are skipped).

    Shape: logits (b, C) with target (b,), or logits (b, n, C) with target (b, n).
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE_INDEX)


def task_metric(logits: Tensor, target: Tensor, metric: str) -> Tensor:
    """Accuracy ("acc") or bits per byte ("bpb": cross-entropy / ln 2) over scored targets.

    Shape: as `task_loss`. Returns a scalar; weight it by `scored(target)` to average exactly
    over batches of different sizes (what `evaluate` does).
    """
    flat_target = target.reshape(-1)
    keep = flat_target != IGNORE_INDEX
    flat_logits = logits.reshape(-1, logits.shape[-1])[keep].float()  # (scored, C)
    flat_target = flat_target[keep]
    if metric == "acc":
        return (flat_logits.argmax(-1) == flat_target).float().mean()
    if metric == "bpb":
        return F.cross_entropy(flat_logits, flat_target) / math.log(2)
    raise ConfigError(f"unknown metric '{metric}'; allowed: {', '.join(METRICS)}")


def scored(target: Tensor) -> int:
    """How many targets of a batch are scored."""
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


def evaluate(model: nn.Module, batches: Iterable[dict], metric: str, arch: Arch | None = None) -> float:
    """The task metric of one model over `batches`; see `evaluate_many`."""
    return evaluate_many({"model": model}, batches, metric, arch)["model"]


def evaluate_with_loss(
    model: nn.Module, batches: Iterable[dict], metric: str, arch: Arch | None = None
) -> tuple[float, float]:
    """(metric, loss) of one model over `batches` in one pass; see `evaluate_many`."""
    scores = _weighted_means({"model": model}, batches, (metric, "loss"), arch)["model"]
    return scores[metric], scores["loss"]


@torch.no_grad()
def _weighted_means(
    models: Mapping[str, nn.Module], batches: Iterable[dict], metrics: tuple[str, ...], arch: Arch | None
) -> dict[str, dict[str, float]]:
    for metric in metrics:
        if metric != "loss":
            score(0.0, metric)  # one line for an unknown metric, before any batch runs
    measures = {m: task_loss if m == "loss" else functools.partial(task_metric, metric=m) for m in metrics}
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
                for metric, measure in measures.items():
                    totals[name][metric] += float(measure(logits, on["target"])) * weight
            count += weight
    finally:
        for name, model in models.items():
            model.train(modes[name])
    if count == 0:
        raise ConfigError("the evaluation batches hold no scored targets")
    return {name: {m: total / count for m, total in values.items()} for name, values in totals.items()}
