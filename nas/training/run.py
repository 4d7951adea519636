"""Run a search end to end in Python: train the supernet with a strategy, then let it choose."""

from __future__ import annotations

from itertools import islice

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader

from nas.results import SearchResult
from nas.safe_load import read_checkpoint
from nas.strategies.base import Strategy
from nas.supernet import Supernet
from nas.training.search import SearchModule


def fit_supernet(
    supernet: Supernet,
    strategy: Strategy,
    datamodule: pl.LightningDataModule,
    metric: str,
    trainer: pl.Trainer,
    ckpt_path: str | None = None,
    **module_kwargs,
) -> SearchModule:
    """Train `supernet` under `strategy` on `datamodule`; returns the search module (the
    `SearchContext` that `strategy.finish` takes).

    Args:
        ckpt_path: a Lightning checkpoint to resume from.
        module_kwargs: optimizer settings for `SearchModule` (lr, weight_decay, grad_clip).
    """
    if ckpt_path is not None:  # a bad file is one line here; Lightning then loads it weights-only too
        read_checkpoint(ckpt_path, "resume checkpoint")
    module = SearchModule(supernet, strategy, metric, **module_kwargs)
    datamodule.setup("fit")
    train = CombinedLoader(
        {"train": datamodule.train_dataloader(), "val": datamodule.val_dataloader()}, mode="max_size_cycle"
    )
    trainer.fit(
        module,
        train_dataloaders=train,
        val_dataloaders=datamodule.val_dataloader(),
        ckpt_path=ckpt_path,
        weights_only=True,
    )
    return module


def validation_batches(datamodule: pl.LightningDataModule, count: int) -> list[dict]:
    """The first `count` validation batches: what candidate archs are compared on."""
    return list(islice(datamodule.val_dataloader(), count))


def run_search(
    supernet: Supernet,
    strategy: Strategy,
    datamodule: pl.LightningDataModule,
    metric: str,
    trainer: pl.Trainer,
    ckpt_path: str | None = None,
    eval_batches: int = 8,
    **module_kwargs,
) -> tuple[SearchModule, SearchResult]:
    """`fit_supernet`, then the strategy's choice on `eval_batches` validation batches (made on
    rank 0 and shared under DDP)."""
    module = fit_supernet(supernet, strategy, datamodule, metric, trainer, ckpt_path, **module_kwargs)
    return module, module.choose(validation_batches(datamodule, eval_batches))
