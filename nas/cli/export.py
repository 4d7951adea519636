"""`nas-export`: write a retrained model as a folder that runs with torch alone
(`nas.pipeline.export`).

    nas-export ckpt=runs/search/<timestamp>/retrain/checkpoints/best.ckpt out=exported
    nas-export ckpt=... out=exported quantize=true overwrite=true
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nas import pipeline
from nas.cli.common import CONFIGS, one_line_errors


@one_line_errors("nas-export")
def run(cfg: DictConfig) -> pipeline.ExportOutcome:
    ckpt = Path(cfg.ckpt)
    outcome = pipeline.export(ckpt, Path(cfg.out), cfg, pipeline.task_of(ckpt, cfg.paths.data_dir))
    print(json.dumps(outcome.metrics, indent=2))
    print(f"exported to {outcome.dir}")
    return outcome


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="export")
def main(cfg: DictConfig) -> None:
    run(cfg)
