"""`nas-export`: write a retrained model as a folder that runs with torch alone.

    nas-export ckpt=runs/search/<timestamp>/retrain/checkpoints/best.ckpt out=exported
    nas-export ckpt=... out=exported quantize=true overwrite=true
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from nas.cli.common import CONFIGS, one_line_errors
from nas.errors import ConfigError
from nas.export import export
from nas.tasks import Task


def task_of(ckpt: Path, data_dir: str) -> Task | None:
    """The task a retrain checkpoint was trained on, to measure the export on its test set."""
    if not ckpt.is_file():
        raise ConfigError(f"{ckpt}: no such checkpoint")
    hparams = torch.load(ckpt, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    config = hparams.get("task_config")
    return hydra.utils.instantiate(config, data_dir=data_dir) if config else None


def export_run(ckpt: Path, out: Path, settings: DictConfig, task: Task | None) -> dict:
    """Export with the test set of `task` (if known) for the metric and the int8 delta."""
    batches = task.test_dataloader() if task is not None else None
    metrics = export(ckpt, out, overwrite=settings.overwrite, quantize=settings.quantize,
                     eval_batches=batches, seq_len=task.seq_len if task is not None else None)
    return {"dir": Path(out), "metrics": metrics}


@one_line_errors("nas-export")
def run(cfg: DictConfig) -> dict:
    ckpt = Path(cfg.ckpt)
    result = export_run(ckpt, Path(cfg.out), cfg, task_of(ckpt, cfg.paths.data_dir))
    print(json.dumps(result["metrics"], indent=2))
    print(f"exported to {result['dir']}")
    return result


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="export")
def main(cfg: DictConfig) -> None:
    run(cfg)
