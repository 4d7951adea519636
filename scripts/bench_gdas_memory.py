"""Peak memory of a GDAS training step against a single-path step on the same arch.

GDAS samples one candidate per decision, so it should cost about what one path does (target:
at most 1.3x); soft DARTS, which runs every candidate, is measured alongside for contrast.
Each measurement runs in a fresh child process (its own peak RSS). Prints JSON.

    python scripts/bench_gdas_memory.py --space search_spaces/lra.yaml --seq-len 1024
"""
import argparse
import json
import resource
import subprocess
import sys
from report import current_rss_mib, write_report  # scripts/report.py



def measure(mode: str, args) -> dict:
    """In the child: one training step (forward + backward) and its peak memory."""
    import torch
    from torch.nn import functional as F

    from nas.model import ModelShape
    from nas.space import SearchSpace
    from nas.supernet import Supernet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace.from_yaml(args.space)
    net = Supernet(space, ModelShape(32, 10, args.seq_len))
    tokens = torch.randint(1, 32, (args.batch, args.seq_len))
    target = torch.randint(0, 10, (args.batch,))
    logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in space.decisions().items()}
    # one GDAS sample; the single-path step runs the same arch
    torch.manual_seed(1)
    weights = {k: F.gumbel_softmax(l, tau=1.0, hard=True) for k, l in logits.items()}
    decisions = space.decisions()
    arch = space.arch_from_choices({k: decisions[k][int(w.argmax())] for k, w in weights.items()})
    base = current_rss_mib()
    if mode == "single_path":
        out = net(tokens, arch)
    elif mode == "gdas":
        out = net.forward_mixed(tokens, weights, hard=True)
    else:  # darts: every candidate, softmax-mixed
        out = net.forward_mixed(tokens, {k: F.softmax(l, -1) for k, l in logits.items()})
    F.cross_entropy(out, target).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"peak_mib": round(peak, 1), "arch": arch.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/lra.yaml")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    passthrough = [f"--space={args.space}", f"--seq-len={args.seq_len}", f"--batch={args.batch}",
                   f"--threads={args.threads}"]
    results = {}
    for mode in ("single_path", "gdas", "darts"):
        child = subprocess.run([sys.executable, __file__, "--child", mode, *passthrough],
                               capture_output=True, text=True, check=True)
        results[mode] = json.loads(child.stdout)
        print(f"{mode:>12} {results[mode]['peak_mib']} MiB", file=sys.stderr)
    single = results["single_path"]["peak_mib"]
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
              "results": results,
              "gdas_over_single_path": round(results["gdas"]["peak_mib"] / single, 3),
              "darts_over_single_path": round(results["darts"]["peak_mib"] / single, 3)}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
