"""Loading checkpoints a user may have been sent, without running code from them.

`torch.load(weights_only=True)` (https://pytorch.org/docs/stable/generated/torch.load.html)
unpickles only tensors and plain types, so a crafted `__reduce__` cannot run. Every LongNAS
checkpoint is read through `read_checkpoint`, including the ones handed to Lightning to
resume from: Lightning's own load is called with `weights_only=True` as well, and the file is
verified here first so that a bad file is one ConfigError line naming it, not a traceback.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nas.errors import ConfigError


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """The checkpoint at `path` as a dict, loaded with weights_only=True on the CPU.

    Raises:
        ConfigError: one line naming `what` and the file, if it is missing, empty, truncated,
            not a torch file, holds a pickled object other than tensors and plain types, or is
            not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{what} {path}: the file is empty")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a zip, truncated, or a pickled object weights_only refuses
        text = str(err).strip()
        reason = text.splitlines()[0] if text else type(err).__name__
        raise ConfigError(f"{what} {path}: cannot be read as a torch checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{what} {path}: holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint
