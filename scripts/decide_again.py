"""Decide a finished DARTS or GDAS search again with another `strategy.decide` rule, without
training again: the run's `.hydra/` and `checkpoints/` (the supernet and the architecture
weights of its last epoch) are copied into a new run folder, which `nas-search` resumes with the
run's own overrides and the new rule. The checkpoint is at the last epoch, so training ends at
once and only the decision runs; the new folder gets its own best_arch.yaml, margins.yaml and
summary.txt (retraining is off), and `nas-rank run=<new folder>` ranks it like any search.
Prints JSON: the two folders, the rule and the decided arch.

    PYTHONPATH=. python scripts/decide_again.py --run runs/search/<run> --decide greedy --out runs/search/<run>_greedy
    PYTHONPATH=. python scripts/decide_again.py --run <run> --decide greedy --out <new> --override search.eval_batches=32

This is how the README's 1024-token `*_greedy` rows of the ranking study were decided: the same
supernets as the argmax rows, so only the decision differs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.run_folder import read_status  # noqa: E402
from nas.strategies import STRATEGIES  # noqa: E402
from nas.strategies.darts import DECIDE, DartsStrategy  # noqa: E402
from nas.training.checkpoint import whole  # noqa: E402

# the strategies that decide from architecture weights (darts, gdas): those with strategy.decide
DIFFERENTIABLE = [name for name in STRATEGIES.names() if issubclass(STRATEGIES.get(name), DartsStrategy)]
# overrides of the original run that the new one sets itself
REPLACED = ("strategy.decide=", "resume=", "hydra.run.dir=", "retrain.enabled=")


def decide_again(run: Path, out: Path, decide: str, overrides: list[str] | None = None) -> Path:
    """Copy `run`'s config and checkpoints to `out` and resume it there with `strategy.decide`.

    Raises:
        SystemExit: with one line, when `run` is no finished differentiable search (status done,
            a whole last checkpoint) or `out` exists, or when nas-search fails (the end of its
            error; `out` is removed again).
    """
    run, out = Path(run), Path(out)
    config, saved = run / ".hydra" / "config.yaml", run / ".hydra" / "overrides.yaml"
    if not (run / "checkpoints" / "last.ckpt").is_file() or not config.is_file() or not saved.is_file():
        sys.exit(f"decide_again: {run} is not a search run folder (no checkpoints/last.ckpt or .hydra/)")
    state = read_status(run).get("state")
    if state != "done":  # resuming an unfinished search would train it on
        sys.exit(f"decide_again: {run} has not finished (status.json: {state}); finish it with nas-search resume= first")
    if not whole(run / "checkpoints" / "last.ckpt"):  # nas-search would start over from scratch
        sys.exit(f"decide_again: {run}/checkpoints/last.ckpt is damaged")
    strategy = yaml.safe_load(config.read_text())["strategy"]["name"]
    if strategy not in DIFFERENTIABLE:
        sys.exit(f"decide_again: {run} searched with strategy={strategy}; only {' and '.join(DIFFERENTIABLE)} "
                 "decide from weights")
    if out.exists():
        sys.exit(f"decide_again: {out} exists; name a new folder")
    out.mkdir(parents=True)
    for part in (".hydra", "checkpoints"):  # not status.json: the new folder has not run yet
        shutil.copytree(run / part, out / part)
    kept = [o for o in yaml.safe_load(saved.read_text()) if not o.startswith(REPLACED)]
    cmd = [sys.executable, "-m", "nas.cli.search", *kept, *(overrides or []), f"strategy.decide={decide}",
           "retrain.enabled=false", f"resume={out.resolve()}", f"hydra.run.dir={out.resolve()}"]
    # the run's relative paths (data_dir) are the repository's; its own log is <out>/search.log
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:  # the folder holds only copies: removed, so that the same command can run again
        shutil.rmtree(out)
        sys.exit(f"decide_again: nas-search failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished darts or gdas search run folder")
    parser.add_argument("--decide", required=True, choices=list(DECIDE))
    parser.add_argument("--out", required=True, help="the new run folder (must not exist)")
    parser.add_argument("--override", action="append", default=[], help="more nas-search overrides")
    args = parser.parse_args()
    out = decide_again(args.run, args.out, args.decide, args.override)
    decided = yaml.safe_load((out / "best_arch.yaml").read_text())
    print(json.dumps({"run": str(args.run), "out": str(out), "decide": args.decide, "arch": decided}, indent=2))


if __name__ == "__main__":
    main()
