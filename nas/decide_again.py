"""Decide a finished DARTS or GDAS search again with another `strategy.decide.rule`, without
training again (`nas-decide`).

The run's `.hydra/` and `checkpoints/` (the supernet and the architecture weights of its last
epoch) are copied into a new run folder, which `nas-search` resumes with the run's own overrides
and the new rule. The checkpoint is at the last epoch, so training ends at once and only the
decision runs; the new folder gets its own best_arch.yaml, margins.yaml and summary.txt
(retraining is off; both with the new rule's paired test of each decision and its confidence
line), and `nas-rank run=<new folder>` ranks it like any search.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nas.errors import ConfigError, excerpt
from nas.run_folder import read_status
from nas.safe_load import read_yaml
from nas.strategies.darts import DECIDE
from nas.training.checkpoint import whole

# overrides of the original run that the new one sets itself
REPLACED = ("strategy.decide.rule=", "resume=", "hydra.run.dir=", "retrain.enabled=")
# The run folder may come from someone else, and its overrides become command-line overrides,
# which Hydra would instantiate: none may set Hydra's own settings, the logger (the one config
# instantiated), or any key that names code.
UNSAFE = ("hydra", "logger", "_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def decide_again(run: Path, decide: str, out: Path | None = None, overrides: Sequence[str] = ()) -> Path:
    """Copy `run`'s config and checkpoints to `out` and resume it there with `strategy.decide.rule`.

    Args:
        run: a finished darts or gdas search run folder.
        decide: the rule, one of `nas.strategies.darts.DECIDE`.
        out: the new run folder, which must not exist (default: `<run>_<decide>` beside `run`).
        overrides: more nas-search overrides, after the run's own.

    Returns:
        The new run folder.

    Raises:
        ConfigError: one line, when `decide` is no rule, `run` is no finished differentiable
            search (status done, a whole last checkpoint, a strategy with `decide`) or `out`
            exists, or when nas-search fails (the end of its error; `out` is removed again).
    """
    run = Path(run)
    out = Path(out) if out is not None else run.with_name(f"{run.name}_{decide}")
    if decide not in DECIDE:
        raise ConfigError(f"strategy.decide.rule={decide}: allowed: {', '.join(DECIDE)}")
    config, saved = run / ".hydra" / "config.yaml", run / ".hydra" / "overrides.yaml"
    if not (run / "checkpoints" / "last.ckpt").is_file() or not config.is_file() or not saved.is_file():
        raise ConfigError(f"run={run}: not a search run folder (no checkpoints/last.ckpt or .hydra/)")
    state = read_status(run).get("state")
    if state != "done":  # resuming an unfinished search would train it on
        raise ConfigError(
            f"run={run}: the search has not finished (status.json: {state}); finish it with nas-search resume= first"
        )
    if not whole(run / "checkpoints" / "last.ckpt"):  # nas-search would start over from scratch
        raise ConfigError(f"run={run}: checkpoints/last.ckpt is damaged")
    saved_config = read_yaml(config, "the search's config")
    strategy = saved_config.get("strategy") if isinstance(saved_config, dict) else None
    strategy = strategy if isinstance(strategy, dict) else {}
    if "decide" not in strategy:  # the strategies that decide from architecture weights have the option
        raise ConfigError(
            f"run={run}: searched with strategy={excerpt(strategy.get('name'))}; only the "
            "differentiable strategies (darts, gdas) decide from weights"
        )
    kept = run_overrides(saved)
    if out.exists():
        raise ConfigError(f"out={out}: exists; name a new folder")
    out.mkdir(parents=True)
    for part in (".hydra", "checkpoints"):  # not status.json: the new folder has not run yet
        shutil.copytree(run / part, out / part)
    cmd = [
        sys.executable,
        "-m",
        "nas.cli.search",
        *kept,
        *overrides,
        f"strategy.decide.rule={decide}",
        "retrain.enabled=false",
        f"resume={out.resolve()}",
        f"hydra.run.dir={out.resolve()}",
    ]
    # relative paths of the run's overrides (data_dir) are read from here, as nas-search reads them
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:  # the folder holds only copies: removed, so that the same command can run again
        shutil.rmtree(out)
        raise ConfigError(f"nas-search failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return out


def run_overrides(path: Path) -> list[str]:
    """The command-line overrides a run recorded (`.hydra/overrides.yaml`) but those the new run
    sets itself (REPLACED); one line when one is not a `key=value` string or touches what
    `UNSAFE` names."""
    overrides = read_yaml(path, "the search's overrides")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: not a list of key=value overrides")
    overrides = [o for o in overrides if not o.startswith(REPLACED)]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith(("hydra", "logger")) or any(word in override for word in UNSAFE[2:]):
            raise ConfigError(
                f"{path}: override {excerpt(override)} is not accepted from a file "
                "(it sets Hydra, the logger or code to run)"
            )
    return overrides
