"""Forward+backward time and peak memory of each attention op, side by side with `full`.

Each (op, length) runs in a fresh child process so that its peak memory is its own.
Prints JSON (and writes it with --out): per op and length, median seconds, the ratio to
`full` at that length, and the peak memory of one step in MiB.

    python scripts/bench_attention.py --lengths 1024 4096 16384 --out bench_attention.json
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from report import current_rss_mib, write_report  # scripts/report.py

# label -> (op name, options): the configurations the README table reports.
CONFIGS = {
    "full": ("full", {}),
    "local_w256": ("local", {"window": 256}),
    "block_recurrent_w256_s64": ("block_recurrent", {"window": 256, "states": 64}),
    "linformer_k256": ("linformer", {"k": 256}),
    "performer_f256": ("performer", {"features": 256}),
    "lsh_r1_b64": ("lsh", {"n_hashes": 1, "bucket_size": 64}),
    "lsh_r4_b64": ("lsh", {"n_hashes": 4, "bucket_size": 64}),
    "synthesizer_dense": ("synthesizer", {"variant": "dense"}),
}



def measure(label: str, n: int, args) -> dict:
    """Runs in the child: time `repeats` steps of one op at length n, and its peak memory."""
    import torch

    from nas.ops.attention import build

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name, options = CONFIGS[label]
    device = torch.device(args.device)
    layer = build(name, args.dim, args.heads, max_len=n, head_dim=args.dim // args.heads,
                  **options).to(device)
    x = torch.randn(args.batch, n, args.dim, device=device, requires_grad=True)

    def step():
        layer(x).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss_mib()
    step()  # warm-up, and the step whose peak memory is reported
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": round(peak_mib, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", nargs=2, metavar=("LABEL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return

    labels = ["full"] + [label for label in args.ops if label != "full"]
    passthrough = [f"--{k}={getattr(args, k)}" for k in
                   ("batch", "dim", "heads", "repeats", "threads", "device")]
    results: dict = {label: {} for label in labels}
    for n in args.lengths:
        for label in labels:
            child = subprocess.run([sys.executable, __file__, "--child", label, str(n), *passthrough],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                results[label][n] = {"error": child.stderr.strip().splitlines()[-1]}
            else:
                results[label][n] = json.loads(child.stdout)
            print(f"{label:>18} N={n:<6} {results[label][n]}", file=sys.stderr)
        full = results["full"][n].get("seconds")
        for label in labels:
            if full and "seconds" in results[label][n]:
                results[label][n]["ratio_to_full"] = round(results[label][n]["seconds"] / full, 4)
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
              "results": results}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
