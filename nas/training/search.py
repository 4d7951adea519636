"""The Lightning module of a search: shared-weight training of the supernet, driven by a strategy.

Optimization is manual because strategies differ in what they step: SPOS steps the weights on
one sampled path, DARTS alternates weight and architecture steps, ENAS also steps a controller.
Each training batch is {"train": batch, "val": batch} so that bilevel strategies have both.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor

from nas.errors import ConfigError
from nas.metrics import check_finite, task_loss, task_metric
from nas.model import ModelShape
from nas.ops.attention import revisions, warn_revision_changes
from nas.results import SearchResult
from nas.run_folder import is_rank_zero
from nas.safe_load import read_checkpoint
from nas.space import Arch, SearchSpace
from nas.strategies.base import Strategy
from nas.supernet import FewShotSupernet, Supernet
from nas.training.checkpoint import check_weights_finite, difference, misfit


class SearchModule(pl.LightningModule):
    """Trains `supernet` under `strategy`; implements the strategies' `SearchContext`.

    Args:
        supernet: the shared weights.
        strategy: decides each step what trains (see nas.strategies).
        metric: the task's metric, "acc" or "bpb".
        lr, weight_decay: AdamW on the supernet's weights.
        grad_clip: the norm the supernet's gradients are clipped to (0: off).
    """

    def __init__(
        self,
        supernet: Supernet,
        strategy: Strategy,
        metric: str,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        grad_clip: float = 1.0,
    ):
        super().__init__()
        self.supernet = supernet
        self.strategy = strategy
        self.metric = metric
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.automatic_optimization = False
        strategy.attach(supernet)

    def configure_optimizers(self):
        weights = torch.optim.AdamW(self.supernet.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return [weights, *self.strategy.optimizers()]

    # -- used by strategies ----------------------------------------------------------------
    def arch_loss(self, batch: dict, arch: Arch) -> tuple[Tensor, Tensor]:
        """(loss, logits) of one arch on a batch."""
        logits = self.supernet(batch["tokens"], arch, batch["mask"])
        return task_loss(logits, batch["target"]), logits

    @property
    def max_epochs(self) -> int:
        return self.trainer.max_epochs

    def optimizer(self, index: int = 0) -> torch.optim.Optimizer:
        """One optimizer (0: the supernet's weights, then the strategy's)."""
        optimizers = self.optimizers()
        return optimizers[index] if isinstance(optimizers, list) else optimizers

    def log(self, name: str, value, *args, **kwargs) -> None:
        """LightningModule.log, averaged over ranks under DDP unless told otherwise: per-rank
        losses average, and the arch distribution (equal on every rank) stays as it is."""
        kwargs.setdefault("sync_dist", True)
        super().log(name, value, *args, **kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at an explicit step, flushed: used after training, when nothing else flushes."""
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)
            self.logger.save()

    def agree(self, value):
        """Rank 0's `value` on every rank; `value` without a process group (see SearchContext)."""
        return agree(value)

    def choose(self, val_batches: list[dict]) -> SearchResult:
        """The strategy's final choice (`Strategy.finish`), made on rank 0 alone and shared: the
        candidates' evaluation runs once (evolution's trials are not doubled in its storage) and
        every rank returns the same result. The other ranks wait in the broadcast."""
        result = self.strategy.finish(self, val_batches) if is_rank_zero() else None
        return agree(result)

    def step(self, loss: Tensor, optimizer_index: int = 0) -> None:
        """Backward `loss` and step one optimizer (0: the supernet's weights)."""
        check_finite(loss, self.global_step)
        optimizer = self.optimizer(optimizer_index)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if optimizer_index == 0 and self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), self.grad_clip)
        optimizer.step()

    # -- Lightning hooks -------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        logs = self.strategy.training_step(self, batch["train"], batch.get("val"))
        self.log_dict(
            {f"train/{k}": v for k, v in logs.items()},
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=batch["train"]["tokens"].shape[0],
            sync_dist=True,
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        arch = self.strategy.current_arch()
        loss, logits = self.arch_loss(batch, arch)
        size = batch["tokens"].shape[0]
        self.log("val/loss", loss, batch_size=size)
        self.log(
            f"val/{self.metric}", task_metric(logits, batch["target"], self.metric), prog_bar=True, batch_size=size
        )

    def on_train_epoch_end(self) -> None:
        self.strategy.on_epoch_end(self)

    def model_record(self) -> dict:
        """What it takes to rebuild the supernet: space, shape, sharing, few_shot (the
        checkpoint's `supernet` entry, less op_revisions); a resume must build the same."""
        net = self.supernet
        return {
            "space": net.space.to_dict(),
            "shape": net.shape.to_dict(),
            "sharing": net.sharing,
            "few_shot": getattr(net, "split", None),
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # retrain's init=inherit, nas-rank and resume= read it
        checkpoint["supernet"] = {**self.model_record(), "op_revisions": revisions(self.supernet.space.all_op_types())}
        # Resuming must replay the same batches and samples as an uninterrupted run.
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        # plain types: checkpoints load with weights_only=True, which refuses numpy arrays
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng" in checkpoint:
            torch.set_rng_state(checkpoint["rng"]["torch"])
            random.setstate(checkpoint["rng"]["python"])
            kind, keys, position, has_gauss, gauss = checkpoint["rng"]["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))


def agree(value):
    """Broadcast a picklable `value` from rank 0 to every rank of the default process group;
    without one (or with one rank) return it unchanged."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def load_supernet(path: str | Path, space: SearchSpace | None = None) -> Supernet | FewShotSupernet:
    """The supernet saved in a search checkpoint; with `space`, check that it is that space."""
    path = Path(path)
    checkpoint = read_checkpoint(path, "supernet checkpoint")
    if not isinstance(checkpoint.get("supernet"), dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{path}: not a LongNAS search checkpoint (no 'supernet' entry)")
    meta = checkpoint["supernet"]
    unknown = sorted(set(meta) - {"space", "shape", "sharing", "few_shot", "op_revisions"}, key=str)
    if unknown:
        raise ConfigError(f"{path}: unknown key {str(unknown[0])[:60]!r} in its 'supernet' entry")
    if not (meta.get("few_shot") is None or isinstance(meta["few_shot"], str)):
        raise ConfigError(f"{path}: supernet.few_shot must be a decision name or null")
    saved = SearchSpace.from_dict(meta["space"], source=str(path))
    if space is not None and saved != space:
        where = difference(saved.to_dict(), space.to_dict())[0] or "(top level)"
        raise ConfigError(
            f"{path}: checkpoint is from space '{saved.name}', not '{space.name}': they differ at '{where}'"
        )
    shape = ModelShape.from_dict(meta.get("shape"), source=f"{path}: shape")
    warn_revision_changes(meta.get("op_revisions"), saved.all_op_types(), source=str(path))
    try:
        supernet = Supernet(saved, shape, sharing=meta.get("sharing"))
        if meta.get("few_shot"):
            supernet = FewShotSupernet(supernet, meta["few_shot"])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    prefix = "supernet."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if str(k).startswith(prefix)}
    problem = misfit(state, supernet.state_dict())
    if problem:
        raise ConfigError(f"{path}: its weights do not fit the supernet it records: {problem}")
    check_weights_finite(state, f"supernet checkpoint {path}")  # NaN would be inherited and distilled silently
    supernet.load_state_dict(state)
    return supernet
