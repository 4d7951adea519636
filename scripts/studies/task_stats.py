"""Task statistics, printed as JSON: ListOps length and label distributions (ours at the default
and at LRA's settings, and LRA's own sample files when present), the time to generate 10,000
examples of each synthetic task into an empty cache, and the time to load one training batch
(docs/tasks.md, "Task statistics").

    python scripts/studies/task_stats.py --out task_stats.json
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nas.tasks import build
from nas.tasks.listops import ListOpsConfig, read_tsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the harness, however this file is run
from harness import write_report  # one JSON report for benchmarks and studies

LRA_SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "lra_listops_sample"
LRA_LISTOPS = {"longer_than": 500, "shorter_than": 2000, "max_len": 2000}  # LRA's generator defaults
# (name, task, options): the synthetic tasks at their defaults, plus the harder settings
GENERATED = [
    ("listops", "listops", {}),
    ("listops_lra_lengths", "listops", LRA_LISTOPS),
    ("lookup", "lookup", {}),
    ("mqar", "mqar", {}),
    ("selective_copy", "selective_copy", {}),
    ("selective_copy_4k", "selective_copy", {"seq_len": 4096}),
    ("selective_copy_16k", "selective_copy", {"seq_len": 16384}),
    ("pathfinder", "pathfinder", {}),
    ("pathfinder_9", "pathfinder", {"contour_length": 9}),
    ("pathfinder_14", "pathfinder", {"contour_length": 14}),
]


def distribution(lengths: np.ndarray, labels: np.ndarray) -> dict:
    """Length summary, a length histogram in 10 equal bins, and label counts."""
    counts, edges = np.histogram(lengths, bins=10)
    return {
        "examples": len(lengths),
        "length": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 1),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        },
        "length_histogram": {f"{edges[i]:.0f}-{edges[i + 1]:.0f}": int(c) for i, c in enumerate(counts)},
        "labels": {str(k): int(v) for k, v in enumerate(np.bincount(labels, minlength=10))},
        "majority_share": round(float(np.bincount(labels).max() / len(labels)), 4),
    }


def listops_distributions(count: int, folder: Path) -> dict:
    out = {}
    for name, options in (("ours_default", {}), ("ours_lra_settings", LRA_LISTOPS)):
        config = ListOpsConfig(**options)
        task = build(
            "listops",
            data_dir=folder / name,
            num_train=count - 2 * (count // 10),
            num_val=count // 10,
            num_test=count // 10,
            **options,
        )
        task.setup()
        data = [task.splits[s] for s in ("train", "val", "test")]
        lengths = np.array([len(t) for d in data for t in d.tokens])
        labels = np.concatenate([d.targets for d in data])
        out[name] = {
            "settings": {k: getattr(config, k) for k in ("max_depth", "max_args", "longer_than", "shorter_than")},
            **distribution(lengths, labels),
        }
    if LRA_SAMPLE.is_dir():
        data = [read_tsv(LRA_SAMPLE / f"basic_{split}.tsv", 2000, False) for split in ("train", "val", "test")]
        lengths = np.array([len(t) for d in data for t in d.tokens])
        out["lra_sample_files"] = distribution(lengths, np.concatenate([d.targets for d in data]))
    return out


def generation_and_loading(count: int, folder: Path) -> dict:
    """Seconds to generate `count` examples (8:1:1 splits) into an empty cache and read them
    back, seconds to load them again from the cache, and milliseconds per training batch."""
    out = {}
    splits = {"num_train": count - 2 * (count // 10), "num_val": count // 10, "num_test": count // 10}
    for name, task_name, options in GENERATED:
        start = time.perf_counter()
        task = build(task_name, data_dir=folder / name, **splits, **options)
        task.setup()
        generate_s = time.perf_counter() - start
        start = time.perf_counter()
        build(task_name, data_dir=folder / name, **splits, **options).setup()
        cached_s = time.perf_counter() - start
        out[name] = {
            "generate_s": round(generate_s, 2),
            "from_cache_s": round(cached_s, 2),
            "batch_ms": batch_ms(task),
            "seq_len": task.seq_len,
        }
    start = time.perf_counter()
    task = build("bytelm", data_dir=folder / "bytelm")
    task.setup()
    out["bytelm"] = {
        "read_stdlib_s": round(time.perf_counter() - start, 2),
        "batch_ms": batch_ms(task),
        "seq_len": task.seq_len,
        "windows": {s: len(task.splits[s]) for s in ("train", "val", "test")},
        "baseline": {k: round(v, 3) for k, v in task.baseline().items()},
    }
    return out


def batch_ms(task, batches: int = 50) -> float:
    """Milliseconds per training batch (batch_size 32, in-process loading), median of the first
    50 (fewer when the split has fewer, e.g. with a small --count)."""
    times, loader = [], iter(task.train_dataloader())
    while len(times) < batches:
        start = time.perf_counter()
        if next(loader, None) is None:
            break
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="examples per synthetic task")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stats = {
            "listops": listops_distributions(args.count, Path(tmp) / "dist"),
            "generation": generation_and_loading(args.count, Path(tmp) / "gen"),
        }
    write_report(stats, args.out)


if __name__ == "__main__":
    main()
