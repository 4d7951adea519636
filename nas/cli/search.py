"""`nas-search`: train a supernet under a strategy, choose an arch, then retrain and export it
(`nas.pipeline.run`).

    nas-search                                     # the quickstart (see configs/search.yaml)
    nas-search task=listops space=lra strategy=gdas trainer.max_epochs=3
    nas-search resume=runs/search/2026-11-23_14-00-00   # continue an interrupted run
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from nas import pipeline
from nas.cli.common import CONFIGS, finished, one_line_errors
from nas.run_folder import is_rank_zero


@one_line_errors("nas-search")
def run(cfg: DictConfig) -> pipeline.RunOutcome | None:
    """Search, then (if enabled) retrain and export; prints a one-screen summary. None when
    `resume=` names a run that is already done."""
    if finished(cfg, "nas-search"):
        return None
    outcome = pipeline.run(cfg, Path(cfg.paths.output_dir))
    if is_rank_zero():  # under DDP, once
        print(outcome.summary)
    return outcome


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":  # `python -m nas.cli.search`; also how Lightning relaunches DDP ranks
    main()
