"""`nas-export`: write a retrained model as a folder that runs with torch alone
(`nas.pipeline.export`).

    nas-export ckpt=runs/search/<timestamp>/retrain/checkpoints/best.ckpt out=exported
    nas-export ckpt=... out=exported quantize=true overwrite=true

A causal language model's folder also holds its decode-step program, so that
`python exported/predict.py --generate 100 "def "` continues a prompt from a cached state.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nas import pipeline
from nas.cli.common import CONFIGS, one_line_errors
from nas.run_folder import working_in
from nas.safe_load import read_checkpoint
from nas.training.checkpoint import check_weights_finite


@one_line_errors("nas-export")
def run(cfg: DictConfig) -> pipeline.ExportOutcome:
    """Export under a lock on `out` (.<out>.lock and .<out>.pid beside it, so a second
    nas-export to the same folder stops naming the first's PID) with its status in
    .<out>.status.json; the folder itself appears only when complete."""
    ckpt, out = Path(cfg.ckpt), Path(cfg.out)
    weights = read_checkpoint(ckpt, "ckpt").get("state_dict")
    if isinstance(weights, dict):  # NaN weights would export a model that predicts nothing
        check_weights_finite(weights, f"ckpt {ckpt}")
    with working_in(out.parent, name=f".{out.name}"):
        outcome = pipeline.export(ckpt, out, cfg, pipeline.task_of(ckpt, cfg.paths.data_dir))
    print(json.dumps(outcome.metrics, indent=2))
    print(f"exported to {outcome.dir}")
    return outcome


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="export")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":  # `python -m nas.cli.export`, as nas.cli.search
    main()
