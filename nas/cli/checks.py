"""Up-front checks of a composed CLI config: bad input stops before any training, as one line.

Hydra accepts any value its grammar parses (`trainer.max_epochs=abc`, `seed=1e3`), and a
`resume=` folder that does not exist is simply created; these checks name the field and the
allowed values instead of letting Lightning, PyTorch or a fresh run meet them later.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nas.errors import ConfigError

# trainer fields that must be whole numbers, with the smallest allowed value; max_epochs=0
# would let an untrained supernet pick the arch, so it must be at least 1
_TRAINER_INTS = {"max_epochs": 1, "devices": 1, "num_nodes": 1, "log_every_n_steps": 1,
                 "num_sanity_val_steps": 0}


def _whole(value: object, field: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{field}={value!r}: must be a whole number >= {least}")


def validate(cfg: DictConfig, command: str) -> None:
    """Raise ConfigError (one line naming the field) for a value no stage would accept."""
    if "seed" in cfg:
        _whole(cfg.seed, "seed", 0)
    trainer = cfg.get("trainer")
    if trainer is not None:
        for field, least in _TRAINER_INTS.items():
            if field in trainer:
                _whole(OmegaConf.select(trainer, field), f"trainer.{field}", least)
    retrain = cfg.get("retrain")
    if retrain is not None and "max_epochs" in retrain:
        _whole(retrain.max_epochs, "retrain.max_epochs", 1)
    resume = cfg.get("resume")
    if resume and command in ("nas-search", "nas-retrain"):
        folder = Path(str(resume))
        if not ((folder / "checkpoints").is_dir() or (folder / "status.json").is_file()):
            raise ConfigError(f"resume={resume}: not a run folder (no checkpoints/ in it); "
                              "pass the folder a previous run printed")
    out = cfg.get("out")
    if out and command == "nas-export":
        parent = Path(str(out)).parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"out={out}: {parent} is a file, not a folder")
