"""Run a search end to end in Python: train the supernet with a strategy, then let it choose."""
from __future__ import annotations

from itertools import islice

import pytorch_lightning as pl
from pytorch_lightning.utilities import CombinedLoader

from nas.results import SearchResult
from nas.strategies.base import Strategy
from nas.supernet import Supernet
from nas.training.search import SearchModule


def run_search(supernet: Supernet, strategy: Strategy, datamodule: pl.LightningDataModule, metric: str,
               trainer: pl.Trainer, ckpt_path: str | None = None, eval_batches: int = 8,
               **module_kwargs) -> tuple[SearchModule, SearchResult]:
    """Train `supernet` under `strategy` on `datamodule`, then return the strategy's choice.

    Args:
        ckpt_path: a Lightning checkpoint to resume from.
        eval_batches: validation batches on which the final choice evaluates candidate archs.
        module_kwargs: optimizer settings for `SearchModule` (lr, weight_decay, grad_clip).
    """
    module = SearchModule(supernet, strategy, metric, **module_kwargs)
    datamodule.setup("fit")
    train = CombinedLoader({"train": datamodule.train_dataloader(), "val": datamodule.val_dataloader()},
                           mode="max_size_cycle")
    trainer.fit(module, train_dataloaders=train, val_dataloaders=datamodule.val_dataloader(),
                ckpt_path=ckpt_path)
    val_batches = list(islice(datamodule.val_dataloader(), eval_batches))
    return module, strategy.finish(module, val_batches)
