"""`nas-retrain`: train one arch as a standalone model (from scratch or from the supernet's
weights, optionally distilling from the supernet's largest subnet) and report its test metric
(`nas.pipeline.retrain`).

    nas-retrain arch=runs/search/<timestamp>/best_arch.yaml task=mqar
    nas-retrain arch=best_arch.yaml retrain.init=inherit retrain.supernet_ckpt=runs/search/<timestamp>/checkpoints/last.ckpt
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from nas import pipeline
from nas.cli.common import CONFIGS, finished, one_line_errors
from nas.run_folder import working_in
from nas.space import Arch


@one_line_errors("nas-retrain")
def run(cfg: DictConfig) -> pipeline.RetrainOutcome | None:
    """Retrain under the run folder's lock and status.json (as nas-search); None when `resume=`
    names a run that is already done."""
    if finished(cfg, "nas-retrain"):
        return None
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    space = pipeline.space_of(cfg)
    arch = Arch.from_yaml(cfg.arch)
    run_dir = Path(cfg.paths.output_dir)
    with working_in(run_dir, resumed=bool(cfg.get("resume"))):
        outcome = pipeline.retrain(cfg, arch, space, pipeline.make_task(cfg), run_dir)
    lines = [
        "",
        arch.describe(),
        "",
        *(f"{k:<24} {v:.4f}" for k, v in outcome.metrics.items()),
        f"{'checkpoint':<24} {outcome.ckpt}",
    ]
    print("\n".join(lines))
    return outcome


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="retrain")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":  # `python -m nas.cli.retrain`, as nas.cli.search
    main()
