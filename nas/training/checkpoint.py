"""Checkpoints that survive a kill: written to a temporary file, then renamed over the old one;
the one before is kept as `<name>.prev`, for a file damaged after it was written."""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from nas.atomic import atomic_path
from nas.errors import ConfigError, excerpt
from nas.run_folder import is_rank_zero
from nas.safe_load import read_checkpoint


class AtomicCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose files are always whole: a run killed while saving keeps the
    previous checkpoint instead of a truncated one."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # every rank saves (Lightning waits for all there); rank 0 writes the file and renames it
        with atomic_path(filepath, unique=False, previous=f"{filepath}.prev", publish=is_rank_zero()) as partial:
            super()._save_checkpoint(trainer, str(partial))
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

            state_dict = {
                **state_dict,
                "dirpath": new,
                **{
                    key: moved(state_dict.get(key))
                    for key in ("best_model_path", "kth_best_model_path", "last_model_path")
                },
                "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()},
            }
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


# What Lightning reads to resume a run; a file without them (a zip of junk, a weights-only save)
# is no run's checkpoint, however whole.
RESUME_KEYS = ("state_dict", "epoch", "global_step", "optimizer_states", "loops")


def intact(path: Path) -> bool:
    """A checkpoint a run can continue from: whole, read by `read_checkpoint` (weights only) as a
    dict that holds RESUME_KEYS."""
    if not whole(path):
        return False
    try:
        checkpoint = read_checkpoint(path)
    except ConfigError:
        return False
    return all(key in checkpoint for key in RESUME_KEYS)


def resumable(last: Path) -> Path | None:
    """`last` if it is intact, else the previous checkpoint with a one-line warning, else None
    (nothing to resume: the run starts over)."""
    if not last.is_file():
        return None
    if intact(last):
        return last
    prev = last.with_name(last.name + ".prev")
    if prev.is_file() and intact(prev):
        log.warning("%s is damaged; resuming from the checkpoint before it, %s", last, prev)
        return prev
    log.warning("%s is damaged and no earlier checkpoint is whole; starting over", last)
    return None


# What wrote a checkpoint, as a user would name it.
WRITERS = {"search": "nas-search's search (a supernet)", "retrain": "a retraining (one arch)"}


def stage_of(checkpoint: dict) -> str | None:
    """ "search" (a supernet's, with its `supernet` record), "retrain" (one arch's, with its model
    in its hyper_parameters: `model`, or `arch` beside `space` and `shape`) or None (neither)."""
    if isinstance(checkpoint.get("supernet"), dict):
        return "search"
    hparams = checkpoint.get("hyper_parameters")
    return "retrain" if isinstance(hparams, dict) and ("model" in hparams or "arch" in hparams) else None


def check_resume(checkpoint: dict, path: str | Path, module: torch.nn.Module, stage: str, built: dict) -> None:
    """One ConfigError line unless this run can continue from `checkpoint` (read from `path`):
    Lightning would otherwise stop on a state_dict RuntimeError, or train on NaN.

    Args:
        module: this run's LightningModule, built as this run's settings say.
        stage: "search" or "retrain", the stage that resumes.
        built: what this run records of its model (the checkpoint's `supernet` entry for a
            search, its hyper_parameters for a retraining); each key must be equal in both.
    """
    source = f"resume checkpoint {path}"
    found = stage_of(checkpoint)
    if found != stage:
        raise ConfigError(
            f"{source}: written by {WRITERS.get(found, 'something other than LongNAS')}, "
            f"not by {WRITERS[stage]}: resume= takes a run folder of the same command"
        )
    saved = checkpoint["supernet"] if stage == "search" else checkpoint["hyper_parameters"]
    for key, value in built.items():
        if saved.get(key) != value:
            where, old, new = difference(saved.get(key), value, key)
            raise ConfigError(
                f"{source}: the run trained another model: {where} is {excerpt(old)} there, "
                f"{excerpt(new)} in this run; resume with the settings it was started with"
            )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"{source}: its state_dict is a {type(state).__name__}, not a dict of weights")
    problem = misfit(state, module.state_dict())
    if problem:
        raise ConfigError(
            f"{source}: its weights do not fit this run's {stage}: {problem}; "
            "resume with the settings the run was started with"
        )
    check_weights_finite(state, source)


def misfit(saved: dict, own: dict) -> str | None:
    """What keeps `saved` from loading into a module whose state_dict is `own`, or None."""
    for key in own:
        if key not in saved:
            return f"'{key}' is not in it"
    for key in saved:
        if key not in own:
            return f"it holds {excerpt(key)}, which this run has not"
    for key, value in own.items():
        if _shape(saved[key]) != _shape(value):
            return f"'{key}' has shape {_shape(saved[key])} there, {_shape(value)} in this run"
    return None


def check_weights_finite(state: dict, source: str) -> None:
    """One ConfigError line naming the first weight that holds NaN or inf: a diverged or damaged
    file, which would train or export a model that predicts nothing."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ConfigError(
                f"{source}: weight {excerpt(key)} holds NaN or inf values; refusing a diverged or damaged checkpoint"
            )


def _shape(value) -> tuple | None:
    """A tensor's shape; None for the plain data a module keeps beside them (`_extra_state`)."""
    return tuple(value.shape) if torch.is_tensor(value) else None


def difference(a, b, prefix: str = "") -> tuple[str, object, object]:
    """The first key path at which two nested dicts differ ("" at the top), and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b or a[key] != b[key]:
                return difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
    return prefix, a, b
