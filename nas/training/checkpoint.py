"""Checkpoints that survive a kill: written to a temporary file, then renamed over the old one;
the one before is kept as `<name>.prev`, for a file damaged after it was written."""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class AtomicCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose files are always whole: a run killed while saving keeps the
    previous checkpoint instead of a truncated one."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            if os.path.isfile(filepath):
                os.replace(filepath, f"{filepath}.prev")
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath


def last_checkpoint(dirpath) -> AtomicCheckpoint:
    """Keeps `last.ckpt`, rewritten after every epoch: what `resume=` continues from."""
    return AtomicCheckpoint(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False)


log = logging.getLogger("nas")


def whole(path: Path) -> bool:
    """A checkpoint torch can read: torch.save writes a zip, and a cut-off one fails its CRCs."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def resumable(last: Path) -> Path | None:
    """`last` if it is whole, else the previous checkpoint with a one-line warning, else None
    (nothing to resume: the run starts over)."""
    if not last.is_file():
        return None
    if whole(last):
        return last
    prev = last.with_name(last.name + ".prev")
    if prev.is_file() and whole(prev):
        log.warning("%s is damaged; resuming from the checkpoint before it, %s", last, prev)
        return prev
    log.warning("%s is damaged and no earlier checkpoint is whole; starting over", last)
    return None
