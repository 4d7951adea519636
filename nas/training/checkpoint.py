"""Checkpoints that survive a kill: written to a temporary file, then renamed over the old one."""
from __future__ import annotations

import os

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class AtomicCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose files are always whole: a run killed while saving keeps the
    previous checkpoint instead of a truncated one."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath


def last_checkpoint(dirpath) -> AtomicCheckpoint:
    """Keeps `last.ckpt`, rewritten after every epoch: what `resume=` continues from."""
    return AtomicCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False)
