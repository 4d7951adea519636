"""Does the quickstart's search beat chance? Its arch versus 5 random archs of the same space.

Runs the quickstart search (retraining off), then trains the searched arch and 5 random archs
from scratch with the same retraining settings, and prints their test metrics as JSON
(docs/ranking-study.md, "Searched against random archs").

    python scripts/studies/quickstart_vs_random.py --out quickstart_vs_random.json
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nas import pipeline
from nas.hydra_configs import compose_config
from nas.metrics import score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the harness, however this file is run
from harness import write_report  # one JSON report for benchmarks and studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random-archs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="run folders go here (default: a temporary folder)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for nas-search's config")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="quickstart_vs_random_"))
    cfg = compose_config(
        "search",
        [
            f"paths.output_dir={workdir / 'search'}",
            f"paths.data_dir={workdir / 'data'}",
            f"seed={args.seed}",
            "retrain.init=scratch",
            *args.overrides,
        ],
    )
    start = time.perf_counter()
    found = pipeline.search(cfg, workdir / "search")
    search_seconds = time.perf_counter() - start
    space, task = found.space, pipeline.make_task(cfg)
    rng = random.Random(args.seed + 1)
    candidates = {"searched": found.arch}
    candidates.update({f"random_{i}": space.sample(rng) for i in range(args.random_archs)})

    key = f"retrain/test/{task.metric}"
    results = {}
    for name, arch in candidates.items():
        metrics = pipeline.retrain(cfg, arch, space, task, workdir / name).metrics
        results[name] = {"arch": arch.to_dict(), key: round(metrics[key], 4)}
        print(f"{name:>10} {key}={metrics[key]:.4f}  {arch.describe().replace(chr(10), ' | ')}", file=sys.stderr)
    random_scores = [results[n][key] for n in candidates if n != "searched"]
    median = statistics.median(random_scores)
    report = {
        "settings": {"overrides": args.overrides, "seed": args.seed, "search_seconds": round(search_seconds, 1)},
        "results": results,
        "random_median": median,
        "searched_beats_median": score(results["searched"][key], task.metric) > score(median, task.metric),
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
