"""The one harness every benchmark runs on: its command line, a child process per case where a
case needs memory readings of its own, medians over repeats, and the JSON report.

A benchmark is a short file of cases:

    def measure(args, mode, n):        # in a fresh child process: one case's row
        ...
        return {"seconds": median(seconds(step, args.repeats)), "peak_mib": peak_rss_mib() - base}

    def sweep(args):                   # in the parent: every case, and the report
        return {"settings": settings(args), "results": {m: in_child(m, 1024) for m in MODES}}

    main(parser(__doc__), sweep, measure)   # prints the report as JSON; --out writes it too

`in_child(*case)` starts the running script again with its own command line plus `--child`, and
returns what `measure(args, *case)` returned there. Benchmarks are measurements to read, never
timed assertions.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

median = statistics.median


def parser(doc: str) -> argparse.ArgumentParser:
    """The benchmark's command line: its docstring's first line, --out, and the harness's --child."""
    parsed = argparse.ArgumentParser(description=doc.splitlines()[0])
    parsed.add_argument("--out", help="also write the JSON report here")
    parsed.add_argument("--child", help=argparse.SUPPRESS)  # a case as JSON, set by in_child
    return parsed


def main(
    parsed: argparse.ArgumentParser,
    sweep: Callable[[argparse.Namespace], dict],
    measure: Callable[..., dict] | None = None,
) -> None:
    """Parse the command line; in a child print `measure(args, *case)` as JSON, else print the
    report `sweep(args)` (and write it to --out)."""
    args = parsed.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args, *json.loads(args.child))))
        return
    write_report(sweep(args), args.out)


def settings(args: argparse.Namespace) -> dict:
    """The options a report records: all of them but the harness's own."""
    return {k: v for k, v in vars(args).items() if k not in ("child", "out")}


def in_child(*case: object, env: Mapping[str, str] | None = None, keep_errors: bool = False) -> dict:
    """Run `measure(args, *case)` in a fresh process (the running script, its own arguments) and
    return its row. A failed child ends the benchmark with its last line of stderr, or with
    `keep_errors` becomes the row {"error": that line} (e.g. an op out of memory at one length).

    Args:
        case: JSON-able values, passed to `measure` after `args`.
        env: the child's whole environment (default: this process's).
    """
    cmd = [sys.executable, sys.argv[0], *sys.argv[1:], "--child", json.dumps(case)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=None if env is None else dict(env))
    if done.returncode:
        line = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        if not keep_errors:
            sys.exit(f"{Path(sys.argv[0]).name}: case {list(case)} failed: {line}")
        row = {"error": line}
    else:
        row = json.loads(done.stdout.strip().splitlines()[-1])
    print(*case, row, file=sys.stderr)  # progress
    return row


def seconds(
    step: Callable[[], object], repeats: int, warmup: int = 1, before: Callable[[], object] | None = None
) -> list[float]:
    """Wall seconds of each of `repeats` calls of `step` after `warmup` untimed ones; `before`
    runs untimed ahead of every call (e.g. a barrier). Pending CUDA work is waited for."""
    times = []
    for i in range(warmup + repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        step()
        _synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def interleaved(steps: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """`seconds` of several steps called in turn, one round at a time, so that load that comes
    and goes hits each of them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            took = seconds(step, 1, warmup=0)[0]
            if i >= warmup:
                times[name].append(took)
    return times


def timer_seconds(stmt: Callable[[], object], min_run_time: float = 1.0) -> float:
    """Median seconds of one call of a short `stmt`, by `torch.utils.benchmark.Timer` (blocks of
    calls until `min_run_time`; CUDA synchronised), on this process's torch threads."""
    import torch
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="stmt()", globals={"stmt": stmt}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def write_report(report: dict, out: str | None) -> None:
    """Print the report as JSON, and write it to `out` too when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


# -- memory readings of this process (Linux)
def rss_mib() -> float:
    """Resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """The most resident memory this process has held (ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def high_water_mib() -> float:
    """The resident-set high-water mark (VmHWM), which `reset_high_water` lowers to now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_high_water() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := the current resident set


def _synchronize() -> None:
    torch = sys.modules.get("torch")  # a benchmark without torch pays nothing
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
