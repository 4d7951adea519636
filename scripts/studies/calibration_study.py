"""Try `nas-rank calibrate.steps` on a search run that `nas-rank` has already ranked, without
training anything standalone again: the run's ranked archs are scored with calibrated inherited
weights and compared with the standalone results in its `rank/ranking.csv` (docs/ranking-study.md,
"Calibration").

    python scripts/studies/calibration_study.py --run runs/rank_study_1k_s16/search/fair_separate_seed0 \
        --steps 0 50 200 --out calibration.json

Prints one JSON object: per step count, Kendall tau-b, Spearman rho, top-k overlap, regret and
each arch's calibrated score, in ranking.csv's order. Resumable: the scores of step counts
already in `--out` are kept, and their figures recomputed against the standalone results that
ranking.csv holds now (e.g. after `nas-rank seeds=2` added a seed).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nas import ranking
from nas.metrics import HIGHER_IS_BETTER
from nas.rank_pipeline import inherited_score
from nas.tasks import build_task
from nas.training.calibrate import Calibration
from nas.training.search import load_supernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the harness, however this file is run
from harness import write_report  # one JSON report for benchmarks and studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a search run folder with rank/ranking.csv")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 200], help="calibration steps to try")
    parser.add_argument("--lr", type=float, default=Calibration.lr, help="calibration learning rate")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data-dir", default="data_cache", help="the task's data cache")
    parser.add_argument("--out", default=None, help="also write the JSON here (and resume from it)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    saved = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    task = build_task(OmegaConf.to_container(saved.task), args.data_dir, "the search's config")
    rows = ranking.read_ranking(args.run / "rank" / "ranking.csv", task.metric)
    standalone = [r.standalone_mean for r in rows]
    report = json.loads(Path(args.out).read_text()) if args.out and Path(args.out).is_file() else {}
    archs = [r.arch.to_dict() for r in rows]
    if report.get("archs") != archs:  # scores of other archs are of no use
        report = {}
    report.update(run=str(args.run), archs=archs, standalone=standalone)
    supernet = load_supernet(args.run / "checkpoints" / "last.ckpt")  # calibration tunes copies of it
    for steps in args.steps:
        calibration = Calibration(steps=steps, lr=args.lr)
        key = f"steps={steps},lr={args.lr:g}"
        kept = report.get(key, {})
        if "inherited_loss" in kept:  # (records older than losses are scored again)
            scores, seconds = list(zip(kept["inherited"], kept["inherited_loss"])), kept["seconds"]
        else:
            start = time.perf_counter()
            scores = [inherited_score(supernet, r.arch, task, calibration, seed=0) for r in rows]
            seconds = round(time.perf_counter() - start)
        summary = ranking.rank_summary(
            [m for m, _ in scores],
            standalone,
            HIGHER_IS_BETTER[task.metric],
            inherited_loss=[loss for _, loss in scores],
        )
        report[key] = {
            **summary.to_dict(),
            "calibrate": dataclasses.asdict(calibration),
            "inherited": [m for m, _ in scores],
            "inherited_loss": [loss for _, loss in scores],
            "seconds": seconds,
        }
        if args.out:  # nothing lost if killed between step counts
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
