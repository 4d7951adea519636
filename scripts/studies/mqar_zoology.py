"""Zoology's MQAR ordering on LongNAS's mixers (docs/hybrid.md): each mixer as both layers of a
2-layer causal model, trained from scratch on multi-query associative recall at several widths
and lengths (Arora et al. 2023, https://arxiv.org/abs/2312.04927, figure 2), scaled to one CPU core.

    OMP_NUM_THREADS=1 python scripts/studies/mqar_zoology.py --out runs/mqar_zoology/study.json
    OMP_NUM_THREADS=1 python scripts/studies/mqar_zoology.py --mixers full --widths 64 --lengths 64 \
        --num-train 80000 --out runs/mqar_zoology/full_10k.json     # attention, 5x the steps
    OMP_NUM_THREADS=1 python scripts/studies/mqar_zoology.py --lengths 256 1024 --pairs 16 64 \
        --num-train 320 160 --epochs 1 --num-val 32 --warmup-steps 5 --folder /tmp/mqar_cost \
        --out runs/mqar_zoology/cost.json                 # 20 and 10 steps: the time of a step at 256 and 1024

The defaults are two of Zoology's figure-2 settings, 64 tokens with 4 key-value pairs and 256
with 16, at its two smallest widths (64 and 128).

Each (mixer, width, length) cell is one `nas-rank` standalone job (`nas.jobs.job.Job`, trained by
`nas.training.standalone.train`): the task `mqar` with `causal=true` and every key queried, as in
Zoology; the model is LongNAS's (learned positions, pre-norm blocks with a small feed-forward; the
mixer's heads are `--head-dim` wide and fill the width). Its accuracy is over every query of the
validation split. With several `--lr`, each cell is trained at each and its best reported, as
Zoology reports the best of its learning-rate sweep.

Resumable: a cell's result is a job result file in `<folder>/results` (named by a hash of arch,
task, seed and budget, so other settings never reuse it), and a killed cell resumes from its last
epoch; a rerun with the same arguments trains only what is missing. Prints one JSON object: the
settings, one entry per cell and learning rate (val accuracy, steps, training seconds, parameters,
the decoding state of one sequence at the cell's length from `nas.cost`), and the best per cell.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from nas.cost import estimate
from nas.errors import ConfigError
from nas.jobs.engine import quiet_lightning
from nas.jobs.job import Budget, Job, read_result, write_result
from nas.model import ModelSpec
from nas.ops.attention import revisions
from nas.space import Arch, LayerArch, SearchSpace
from nas.tasks import build_task
from nas.training import standalone

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the harness, however this file is run
from harness import write_report  # one JSON report for benchmarks and studies

ROOT = Path(__file__).resolve().parents[2]
DEPTH = 2  # Zoology's MQAR models have two layers
TABLE_NUM_TRAIN = {64: 16000, 256: 6400}  # per length: 2000 and 800 steps at batch 16 for 2 epochs
# The mixers as search_spaces/hybrid_lm.yaml names them: candidate -> op type and options.
MIXERS = {
    "full": {"type": "full"},  # exact softmax attention
    "local": {"type": "local", "window": 64},  # causal: the 33 positions up to each query
    "gla": {"type": "gla"},  # gated linear attention, data-dependent decay
    "retnet": {"type": "gla", "decay": "fixed"},  # RetNet's retention
    "gla_conv": {"type": "gla", "short_conv": 4},  # with a short convolution over q, k, v (fla's use_short_conv)
    "gated_deltanet": {"type": "gated_deltanet"},  # with its paper's short convolution over q, k, v
    "gated_deltanet_noconv": {"type": "gated_deltanet", "short_conv": 0},  # without it
    "mamba2": {"type": "mamba2"},
    "hyena": {"type": "hyena"},  # a gated long convolution
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixers", nargs="+", default=list(MIXERS), choices=list(MIXERS))
    parser.add_argument("--widths", nargs="+", type=int, default=[64, 128], help="model widths (d_model)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 256], help="sequence lengths")
    parser.add_argument("--pairs", nargs="+", type=int, help="key-value pairs per length (default: length / 16)")
    parser.add_argument("--keys", type=int, default=64, help="key vocabulary (Zoology: 4096)")
    parser.add_argument("--values", type=int, default=64, help="value vocabulary (Zoology: 4096)")
    parser.add_argument("--head-dim", type=int, default=16, help="width of a head; heads = width / head-dim")
    parser.add_argument("--ffn-mult", type=int, default=2, help="feed-forward width = this * width")
    parser.add_argument(
        "--num-train",
        nargs="+",
        type=int,
        help=f"training sequences, one count or one per length (default: {TABLE_NUM_TRAIN}, docs/hybrid.md's table)",
    )
    parser.add_argument("--num-val", type=int, default=500, help="validation sequences (every query scored)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", nargs="+", type=float, default=[3e-3], help="one training per learning rate")
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, default=ROOT / "runs" / "mqar_zoology", help="results and data")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    args.pairs = args.pairs or [n // 16 for n in args.lengths]
    if args.num_train is None:
        other = [n for n in args.lengths if n not in TABLE_NUM_TRAIN]
        if other:
            parser.error(f"--num-train: no default for length {other[0]}; give one count or one per length")
        args.num_train = [TABLE_NUM_TRAIN[n] for n in args.lengths]
    if len(args.num_train) == 1:
        args.num_train = args.num_train * len(args.lengths)
    for name in ("pairs", "num_train"):
        if len(getattr(args, name)) != len(args.lengths):
            option = "--" + name.replace("_", "-")
            parser.error(f"{option} gives {len(getattr(args, name))} counts for {len(args.lengths)} lengths")
    bad = [w for w in args.widths if w % args.head_dim]
    if bad:
        parser.error(f"width {bad[0]} is not a multiple of --head-dim {args.head_dim}")
    return args


def task_record(args: argparse.Namespace, length: int, pairs: int, num_train: int) -> dict:
    """The causal MQAR task of one length, every key queried (Zoology's queries = pairs)."""
    return {
        "name": "mqar",
        "causal": True,
        "seq_len": length,
        "num_pairs": pairs,
        "num_queries": pairs,
        "num_keys": args.keys,
        "num_values": args.values,
        "num_train": num_train,
        "num_val": args.num_val,
        "num_test": args.num_val,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }


def model_spec(mixer: str, width: int, args: argparse.Namespace, shape) -> ModelSpec:
    """Both layers the same mixer, its heads filling the width."""
    heads, ffn = width // args.head_dim, args.ffn_mult * width
    options = dict(MIXERS[mixer])
    space = SearchSpace.from_dict(
        {
            "name": f"mqar_{mixer}_d{width}",
            "dim": width,
            "head_dim": args.head_dim,
            "depth": [DEPTH],
            "layer": {"attention": {mixer: options}, "heads": [heads], "ffn_dim": [ffn]},
        }
    )
    return ModelSpec(Arch(DEPTH, (LayerArch(mixer, heads, ffn),) * DEPTH), space, shape)


def run_cell(job: Job, folder: Path) -> tuple[dict, bool]:
    """The job's result, read back when a run before finished it, else trained now (resuming
    from the last epoch a killed run kept); and whether it was reused."""
    result = read_result(folder, job)
    if result is not None:
        return result, True
    result = standalone.train(job, checkpoints=folder / "in_progress")
    write_result(folder, job, result)
    for leftover in (folder / "in_progress").glob(f"{job.id}.ckpt*"):
        leftover.unlink(missing_ok=True)
    return result, False


def sweep(args: argparse.Namespace) -> dict:
    results_dir, data_dir = args.folder / "results", args.folder / "data"
    cells, best = [], {}
    start = time.perf_counter()
    for length, pairs, num_train in zip(args.lengths, args.pairs, args.num_train):
        record = task_record(args, length, pairs, num_train)
        task = build_task(record, data_dir, "mqar_zoology")
        steps = args.epochs * math.ceil(num_train / args.batch_size)
        for width in args.widths:
            for mixer in args.mixers:
                spec = model_spec(mixer, width, args, task.shape)
                cost = estimate(spec, length)
                for lr in args.lr:
                    budget = Budget(max_epochs=args.epochs, lr=lr, warmup_steps=args.warmup_steps)
                    trainer = {"accelerator": "cpu", "devices": 1}
                    ops = revisions(spec.space.op_types(spec.arch))
                    job = Job(spec.to_dict(), record, str(data_dir), args.seed, budget, trainer, ops)
                    result, reused = run_cell(job, results_dir)
                    cell = {
                        "mixer": mixer,
                        "width": width,
                        "length": length,
                        "pairs": pairs,
                        "lr": lr,
                        "val_acc": round(result["val"], 4),
                        "val_loss": round(result["val_loss"], 4),
                        "steps": steps,
                        "train_seconds": result["train_seconds"],
                        "reused": reused,
                        "params": cost.params,
                        "state_bytes": round(cost.state_mib * 2**20),
                        "job": job.id,
                    }
                    cells.append(cell)
                    key = f"{mixer} d{width} n{length}"
                    best[key] = max(best.get(key, 0.0), cell["val_acc"])
                    print(
                        f"{key} lr {lr:g}: val acc {cell['val_acc']:.3f} ({cell['train_seconds']:.0f} s"
                        f"{', reused' if reused else ''})",
                        file=sys.stderr,
                    )
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    return {
        "settings": {**settings, "depth": DEPTH, "mixers_options": {m: MIXERS[m] for m in args.mixers}},
        "threads": torch.get_num_threads(),
        "cells": cells,
        "best": best,
        "train_seconds": round(sum(c["train_seconds"] for c in cells), 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)  # one core per study: the table's times are one core's
    quiet_lightning()
    try:
        report = sweep(args)
    except ConfigError as err:  # a task or model these options cannot build: one line
        sys.exit(str(err))
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
