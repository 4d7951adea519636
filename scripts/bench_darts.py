"""Time and peak memory of one soft DARTS training step (plain and PC-DARTS partial heads,
Xu et al. 2020 https://arxiv.org/abs/1907.05737) against a GDAS step and a single-path step.

Each measurement runs in a fresh child process (its own peak RSS over its baseline); the
modes run one after the other in one invocation, so the ratios share the machine's load.
The single path is the space's largest arch (every op at full width and depth), the fairest
baseline for "what one candidate costs"; GDAS samples one path. Prints JSON.

    python scripts/bench_darts.py --space search_spaces/lra.yaml --seq-len 1024 --batch 4
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from report import current_rss_mib, write_report  # scripts/report.py

MODES = ("single_path", "gdas", "darts_k1", "darts_k2", "darts_k4")


def measure(mode: str, args) -> dict:
    """In the child: `steps` forward+backward steps; median time and the peak memory."""
    import torch
    from torch.nn import functional as F

    from nas.model import ModelShape
    from nas.space import SearchSpace
    from nas.supernet import Supernet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace.from_yaml(args.space)
    net = Supernet(space, ModelShape(32, 10, args.seq_len), sharing=args.sharing)
    tokens = torch.randint(1, 32, (args.batch, args.seq_len))
    target = torch.randint(0, 10, (args.batch,))
    logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in space.decisions().items()}
    betas = torch.zeros(space.max_depth, 2, requires_grad=True)
    base = current_rss_mib()

    def step():
        if mode == "single_path":
            out = net(tokens, space.largest())
        elif mode == "gdas":
            out = net.forward_mixed(tokens, {k: F.gumbel_softmax(l, hard=True) for k, l in logits.items()}, hard=True)
        else:
            k = int(mode[-1])
            out = net.forward_mixed(tokens, {k_: F.softmax(l, -1) for k_, l in logits.items()}, partial=k,
                                    edges=None if k == 1 else 2 * F.softmax(betas, -1))
        F.cross_entropy(out, target).backward()

    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"step_s": round(statistics.median(times), 3), "peak_mib": round(peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/lra.yaml")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="steps per mode; the median time is reported")
    parser.add_argument("--sharing", default="entangled", choices=["entangled", "separate", "entangled_gain"],
                        help="the supernet's Q/K/V/O sharing (nas-search's default is separate)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    passthrough = [f"--space={args.space}", f"--seq-len={args.seq_len}", f"--batch={args.batch}",
                   f"--threads={args.threads}", f"--steps={args.steps}", f"--sharing={args.sharing}"]
    results = {}
    for mode in args.modes.split(","):
        child = subprocess.run([sys.executable, __file__, "--child", mode, *passthrough],
                               capture_output=True, text=True, check=True)
        results[mode] = json.loads(child.stdout)
        print(mode, results[mode], file=sys.stderr)
    single = results.get("single_path")
    ratios = {} if single is None else {
        f"{mode}_over_single_path": {"time": round(r["step_s"] / single["step_s"], 2),
                                     "memory": round(r["peak_mib"] / single["peak_mib"], 2)}
        for mode, r in results.items() if mode != "single_path"}
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
              "results": results, "ratios": ratios}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
