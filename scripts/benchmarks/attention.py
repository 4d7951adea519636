"""Forward+backward time and peak memory of each attention op, side by side with `full`, with
reference implementations, and with the machine's fp32 matmul speed.

Each (op, length) runs in a fresh child process so that its peak memory is its own; `--rounds`
repeats the whole sweep, interleaved, and reports medians, so that load from other processes
hits every op alike. Prints JSON (and writes it with --out): per op and length, median seconds,
the ratio to `full` (and to the reference, for `ref_*` pairs), the peak memory of one step in
MiB, and achieved GFLOP/s: fwd+bwd counted as 3x the cost model's forward FLOPs of the layer
(projections and core), against a square fp32 matmul timed in the same child right after.

Ops are built bidirectional (the linear-recurrent mixers then run a forward and a backward
scan); `--causal` builds every op in its causal form instead (`full`: the fused kernel's
`is_causal`, counted as half the score pairs), and refuses ops that have none.

Children run with the allocator setting the CLIs use (nas.cpu_allocator: freed memory is kept
for reuse); `--glibc` also runs every op on glibc's defaults, as `<label>@glibc` rows, and
reports each op's `ratio_to_glibc`. Each child records the 1-minute load average before and
after its case: on a shared machine the times are only as good as it. `--profile K` adds one
more step under torch.profiler per case and reports its K kernels of most self CPU time.

    git --git-dir=/work/.mirror/lucidrains+linformer/repo archive HEAD | tar -x -C /tmp/linformer
    python scripts/benchmarks/attention.py --lengths 4096 16384 --rounds 3 \
        --reference-src /tmp/linformer --out bench_attention.json
    python scripts/benchmarks/attention.py --ops full local_w256 gla retnet gated_deltanet mamba2 hyena \
        --causal --threads 1 --rounds 2

`--reference-src` is a checkout of github.com/lucidrains/linformer (outside this repository);
without it the `ref_*` rows are skipped.
"""

import os
import sys

from harness import (
    in_child,
    main,
    median,
    parser,
    peak_rss_mib,
    rss_mib,
    seconds,
    settings,
    timer_seconds,
)

# label -> (op name, options): the configurations the docs' table reports.
CONFIGS = {
    "full": ("full", {}),
    "local_w256": ("local", {"window": 256}),
    "block_recurrent_w256_s64": ("block_recurrent", {"window": 256, "states": 64}),
    "linformer_k256": ("linformer", {"k": 256}),
    "performer_f256": ("performer", {"features": 256}),
    "lsh_r1_b64": ("lsh", {"n_hashes": 1, "bucket_size": 64}),
    "lsh_r4_b64": ("lsh", {"n_hashes": 4, "bucket_size": 64}),
    "synthesizer_dense": ("synthesizer", {"variant": "dense"}),
    # the linear-recurrent and convolutional mixers, at their default chunks (64) and filters
    "gla": ("gla", {}),
    "retnet": ("gla", {"decay": "fixed"}),
    "gated_deltanet": ("gated_deltanet", {}),  # with its paper's short convolution over q, k, v
    "gated_deltanet_noconv": ("gated_deltanet", {"short_conv": 0}),
    "mamba2": ("mamba2", {}),
    "hyena": ("hyena", {}),
}
# label -> (our config it is compared with, the reference's constructor keyword options)
REFERENCES = {
    "ref_linformer_k256": ("linformer_k256", {"k": 256}),
}


def matmul_gflops(args, device) -> float:
    """Runs in the child: fp32 GFLOP/s of a square matmul on the op's device, its practical peak."""
    import torch

    a, b = (torch.randn(args.matmul_size, args.matmul_size, device=device) for _ in range(2))
    return round(2 * args.matmul_size**3 / timer_seconds(lambda: a @ b) / 1e9, 1)


def layer_flops(label: str, n: int, args) -> int:
    """Forward FLOPs of one layer as the cost model counts them: mixes, projections and core."""
    from nas.cost import attention_flops
    from nas.ops.attention import make_core

    label = label.partition("@")[0]
    name, options = CONFIGS[REFERENCES[label][0] if label in REFERENCES else label]
    core = make_core(name, args.dim // args.heads, args.heads, n, args.causal, **options)
    return args.batch * attention_flops(core, n, args.dim, args.heads)


def make_layer(label: str, n: int, args):
    if label in REFERENCES:
        sys.path.insert(0, args.reference_src)
        from linformer import LinformerSelfAttention

        return LinformerSelfAttention(
            args.dim, seq_len=n, heads=args.heads, dim_head=args.dim // args.heads, **REFERENCES[label][1]
        )
    from nas.ops.attention import build

    name, options = CONFIGS[label]
    return build(name, args.dim, args.heads, max_len=n, head_dim=args.dim // args.heads, causal=args.causal, **options)


def measure(args, label: str, n: int) -> dict:
    """Runs in the child: time `repeats` steps of one op at length n, and its peak memory."""
    import torch

    load_before = os.getloadavg()[0]
    label, _, allocator = label.partition("@")
    if allocator != "glibc":  # the CLIs' setting
        from nas.cpu_allocator import reuse_freed_memory

        reuse_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    layer = make_layer(label, n, args).to(device)
    x = torch.randn(args.batch, n, args.dim, device=device, requires_grad=True)

    def step():
        layer(x).sum().backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mib()
    step()  # warm-up, and the step whose peak memory is reported
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = peak_rss_mib() - base
    step_s = median(seconds(step, args.repeats, warmup=0))
    # The matmul right after, in the same process and threads: a load that slowed the op
    # slows this too, so the percentage below is less noisy than the seconds.
    row = {
        "seconds": step_s,
        "peak_mib": round(peak_mib, 1),
        "matmul_gflops": matmul_gflops(args, device),
        "loadavg_1min": [load_before, os.getloadavg()[0]],  # before and after the case
    }
    if args.profile:
        row["profile"] = profile(step, args.profile)
    return row


def profile(step, top: int) -> list:
    """One more step under torch.profiler: its `top` kernels by self CPU time, each as [name,
    self ms, percent of the step's self time] (forward and backward kernels apart)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        [e.key, round(e.self_cpu_time_total / 1e3, 1), round(100 * e.self_cpu_time_total / total, 1)]
        for e in events[:top]
    ]


def chosen_ops(args) -> list[str]:
    """--ops, or every config (and reference) that the run can build; `full` first, as the baseline.
    An op chosen by name that has no causal form under --causal ends the run in one line."""
    from nas.ops.attention import ATTENTION

    def refusal(label: str) -> str:
        if not args.causal:
            return ""
        if label in REFERENCES:
            return "the reference is bidirectional"
        return ATTENTION.get(CONFIGS[label][0]).causal_refusal

    if args.ops is None:
        wanted = [label for label in list(CONFIGS) + list(REFERENCES) if not refusal(label)]
    else:
        refused = [f"{label} ({refusal(label)})" for label in args.ops if refusal(label)]
        if refused:
            sys.exit(f"attention.py: --causal, but no causal form: {', '.join(refused)}")
        wanted = args.ops
    return ["full"] + [label for label in wanted if label != "full" and (args.reference_src or label not in REFERENCES)]


def sweep(args) -> dict:
    labels = chosen_ops(args)
    if args.glibc:
        labels += [f"{label}@glibc" for label in labels]
    runs: dict = {label: {n: [] for n in args.lengths} for label in labels}
    for _ in range(args.rounds):
        for n in args.lengths:
            for label in labels:
                runs[label][n].append(in_child(label, n, keep_errors=True))
    results: dict = {label: {} for label in labels}
    matmul = []
    for n in args.lengths:
        for label in labels:
            good = [r for r in runs[label][n] if "seconds" in r]
            if not good:
                results[label][n] = runs[label][n][-1]
                continue
            typical = median(r["seconds"] for r in good)
            gflops = 3 * layer_flops(label, n, args) / typical / 1e9
            pct = median(100 * 3 * layer_flops(label, n, args) / r["seconds"] / 1e9 / r["matmul_gflops"] for r in good)
            matmul += [r["matmul_gflops"] for r in good]
            results[label][n] = {
                "seconds": round(typical, 4),
                "best_seconds": round(min(r["seconds"] for r in good), 4),
                "peak_mib": median(r["peak_mib"] for r in good),
                "gflops": round(gflops, 1),
                "pct_of_matmul": round(pct, 1),
                "loadavg_1min": [load for r in good for load in r["loadavg_1min"]],
            }
            if args.profile:
                results[label][n]["profile"] = good[-1]["profile"]  # the last round's
        full = results["full"][n].get("seconds")
        for label in labels:
            row = results[label][n]
            if full and "seconds" in row:
                row["ratio_to_full"] = round(row["seconds"] / full, 4)
        pairs = [(ours, ref) for ref, (ours, _) in REFERENCES.items()]
        pairs += [(label, f"{label}@glibc") for label in labels if "@" not in label]
        for ours, other in pairs:
            if (
                other in results
                and ours in results
                and "seconds" in results[other][n]
                and "seconds" in results[ours][n]
            ):
                name = "ratio_to_" + ("glibc" if other.endswith("@glibc") else other)
                results[ours][n][name] = round(results[ours][n]["seconds"] / results[other][n]["seconds"], 4)
                # Per round, the pair ran back to back: the median of those ratios is the
                # figure least moved by load that comes and goes between rounds.
                per_round = [
                    a["seconds"] / b["seconds"]
                    for a, b in zip(runs[ours][n], runs[other][n])
                    if "seconds" in a and "seconds" in b
                ]
                results[ours][n][f"{name}_per_round"] = round(median(per_round), 4)
    return {
        "settings": settings(args),
        "cpu": cpu_model(),
        "matmul_gflops": {"median": median(matmul), "max": max(matmul)},
        "results": results,
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), which the docs' conditions name."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument(
        "--ops",
        nargs="+",
        choices=list(CONFIGS) + list(REFERENCES),
        help="default: every config (and reference) the run can build",
    )
    cli.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
    cli.add_argument("--batch", type=int, default=1)
    cli.add_argument("--dim", type=int, default=256)
    cli.add_argument("--heads", type=int, default=4)
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--rounds", type=int, default=1, help="interleaved sweeps; medians reported")
    cli.add_argument("--threads", type=int, default=2)
    cli.add_argument("--device", default="cpu")
    cli.add_argument("--causal", action="store_true", help="every op in its causal form (full: is_causal)")
    cli.add_argument(
        "--profile", type=int, default=0, metavar="K", help="also profile one step: its K kernels of most self time"
    )
    cli.add_argument("--matmul-size", type=int, default=2048)
    cli.add_argument(
        "--glibc", action="store_true", help="also time every op on glibc's allocator defaults (<label>@glibc rows)"
    )
    cli.add_argument("--reference-src", help="a checkout of lucidrains/linformer, for ref_* rows")
    main(cli, sweep, measure)
