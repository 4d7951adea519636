"""Checkpoints that survive a kill: written to a temporary file, then renamed over the old one;
the one before is kept as `<name>.prev`, for a file damaged after it was written."""
from __future__ import annotations

import logging
import os
import warnings
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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # resume= continues in the run's own checkpoints/ by design, so files there are expected
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the best score and paths also when the run folder was moved or is named by
        another path since the checkpoint was written: the files keep their names in it."""
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            def moved(path):
                return os.path.join(new, os.path.basename(path)) if path else path
            state_dict = {**state_dict, "dirpath": new,
                          **{key: moved(state_dict.get(key)) for key in
                             ("best_model_path", "kth_best_model_path", "last_model_path")},
                          "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)


def last_checkpoint(dirpath, name: str = "last") -> AtomicCheckpoint:
    """Keeps `<name>.ckpt`, rewritten after every epoch: what `resume=` continues from."""
    return AtomicCheckpoint(dirpath=dirpath, filename=name, save_top_k=1, enable_version_counter=False)


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
