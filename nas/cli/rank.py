"""`nas-rank`: how faithfully a search's supernet ranks architectures: inherited-weight scores
against standalone training from scratch, Kendall tau-b (also among the standalone-best
archs), Spearman rho, top-k overlap and the regret of the supernet's pick, beside the free
baselines' (parameter count, FLOPs, zero-cost proxies) and, for several runs, an ensemble's
(`nas.rank_pipeline.rank`).

    nas-rank run=runs/search/<timestamp> archs=8
    nas-rank run=runs/search/<timestamp> archs=ranked.csv seeds=3 workers=2
    nas-rank 'run=[runs/search/<a>,runs/search/<b>]' archs=8
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nas import rank_pipeline
from nas.cli.common import CONFIGS, one_line_errors


@one_line_errors("nas-rank")
def run(cfg: DictConfig) -> rank_pipeline.RankOutcome:
    outcome = rank_pipeline.rank(cfg)
    print(outcome.text)
    return outcome


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="rank")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":  # `python -m nas.cli.rank`
    main()
