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
from torch import Tensor

from nas.errors import ConfigError
from nas.space import Arch, SearchSpace
from nas.strategies.base import Strategy
from nas.supernet import FewShotSupernet, Supernet
from nas.training.metrics import check_finite, task_loss, task_metric


class SearchModule(pl.LightningModule):
    def __init__(self, supernet: Supernet, strategy: Strategy, metric: str, lr: float = 1e-3,
                 weight_decay: float = 0.01, grad_clip: float = 1.0):
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

    def step(self, loss: Tensor, optimizer_index: int = 0) -> None:
        """Backward `loss` and step one optimizer (0: the supernet's weights)."""
        check_finite(loss, self.global_step)
        optimizers = self.optimizers()
        optimizer = optimizers[optimizer_index] if isinstance(optimizers, list) else optimizers
        optimizer.zero_grad()
        self.manual_backward(loss)
        if optimizer_index == 0 and self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), self.grad_clip)
        optimizer.step()

    # -- Lightning hooks -------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        logs = self.strategy.training_step(self, batch["train"], batch.get("val"))
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, on_step=True,
                      on_epoch=False, batch_size=batch["train"]["tokens"].shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        arch = self.strategy.current_arch()
        loss, logits = self.arch_loss(batch, arch)
        size = batch["tokens"].shape[0]
        self.log("val/loss", loss, batch_size=size)
        self.log(f"val/{self.metric}", task_metric(logits, batch["target"], self.metric), prog_bar=True,
                 batch_size=size)

    def on_train_epoch_end(self) -> None:
        self.strategy.on_epoch_end(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What it takes to rebuild the supernet (retrain's init=inherit reads it).
        net = self.supernet
        checkpoint["supernet"] = {"space": net.space.to_dict(), "vocab_size": net.vocab_size,
                                  "num_classes": net.num_classes, "max_len": net.max_len,
                                  "head": net.head, "sharing": net.sharing,
                                  "few_shot": getattr(net, "split", None)}
        # Resuming must replay the same batches and samples as an uninterrupted run.
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        # plain types: checkpoints load with weights_only=True, which refuses numpy arrays
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": (kind, keys.tolist(), position, has_gauss, gauss)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng" in checkpoint:
            torch.set_rng_state(checkpoint["rng"]["torch"])
            random.setstate(checkpoint["rng"]["python"])
            kind, keys, position, has_gauss, gauss = checkpoint["rng"]["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))


def load_supernet(path: str | Path, space: SearchSpace | None = None) -> Supernet | FewShotSupernet:
    """The supernet saved in a search checkpoint; with `space`, check that it is that space."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "supernet" not in checkpoint:
        raise ConfigError(f"{path}: not a LongNAS search checkpoint (no 'supernet' entry)")
    meta = checkpoint["supernet"]
    saved = SearchSpace.from_dict(meta["space"], source=str(path))
    if space is not None and saved != space:
        where = first_difference(saved.to_dict(), space.to_dict())
        raise ConfigError(f"{path}: checkpoint is from space '{saved.name}', not '{space.name}': "
                          f"they differ at '{where}'")
    supernet = Supernet(saved, meta["vocab_size"], meta["num_classes"], meta["max_len"],
                        head=meta["head"], sharing=meta["sharing"])
    if meta.get("few_shot"):
        supernet = FewShotSupernet(supernet, meta["few_shot"])
    prefix = "supernet."
    supernet.load_state_dict({k[len(prefix):]: v for k, v in checkpoint["state_dict"].items()
                              if k.startswith(prefix)})
    return supernet


def first_difference(a, b, prefix: str = "") -> str:
    """The first key path at which two nested dicts/lists differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b or a[key] != b[key]:
                return first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
    return prefix or "(top level)"
