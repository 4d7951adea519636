"""Final architecture margins (winner minus runner-up per decision) of a DARTS search under
the decisiveness remedies of nas.strategies.darts (temperature, entropy, Fair DARTS zero-one
https://arxiv.org/abs/1911.12126, progressive shrinking, the final comparisons), on the
quickstart defaults (docs/ranking-study.md, "DARTS margins"). One search per variant, in this
process, one after the other. Prints JSON:
per variant the final margins, for `shrink` the margin at which each decision's last cut was
made, for `top2` and `greedy` the supernet's scores of the candidates compared. Every other
variant takes the argmax of its weights (`strategy.decide.rule=argmax`): what the remedy decided.

    python scripts/studies/darts_margins.py --variants plain,tau --out margins.json
    python scripts/studies/darts_margins.py --override +trainer.limit_train_batches=16   # shorter epochs
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from nas.hydra_configs import compose_config
from nas.pipeline import search

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the harness, however this file is run
from harness import write_report  # one JSON report for benchmarks and studies

ARGMAX = "+strategy.decide.rule=argmax"
VARIANTS = {
    "plain": [ARGMAX],
    "tau": ["+strategy.temperature.end=0.1", ARGMAX],
    "entropy": ["+strategy.sharpen.entropy=0.5", ARGMAX],
    "zero_one": ["+strategy.sharpen.zero_one=5.0", ARGMAX],
    "shrink": ["+strategy.shrink.every=2", ARGMAX],  # 5 epochs: drops after epochs 2 and 4
    "top2": ["+strategy.decide.rule=top2"],
    "greedy": ["+strategy.decide.rule=greedy"],
}


def run(variant: str, extra: list[str], root: Path, overrides: list[str]) -> dict:
    run_dir = root / variant
    cfg = compose_config(
        "search",
        [
            f"paths.output_dir={run_dir}",
            f"paths.data_dir={root / 'data'}",
            "strategy=darts",
            "~logger",
            *[o.replace("+strategy.", "strategy.") for o in extra],
            *overrides,
        ],
    )
    start = time.perf_counter()
    found = search(cfg, run_dir)
    margins = found.margins
    key = min(margins, key=margins.get)
    out = {
        "seconds": round(time.perf_counter() - start),
        "arch": found.arch.to_dict(),
        "val_metric": found.metrics,
        "smallest_margin": {key: round(margins[key], 4)},
        "margins": {k: round(v, 4) for k, v in margins.items()},
    }
    shrunk = _sidecar(run_dir).get("shrink", [])
    if shrunk:  # the last drop of a decision: the survivor's lead over the last one dropped
        out["cut_margins"] = {e["decision"]: e["cut"] for e in shrunk}
    if found.comparison:
        out["decide"] = found.comparison
    return out


def _sidecar(run_dir: Path) -> dict:
    path = run_dir / "margins.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--override", action="append", default=[], help="more Hydra overrides, e.g. space=tiny")
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        report = {
            "overrides": args.override,
            "results": {v: run(v, VARIANTS[v], Path(root), args.override) for v in args.variants.split(",")},
        }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
