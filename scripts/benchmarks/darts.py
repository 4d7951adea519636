"""Time and peak memory of one soft DARTS training step (plain and PC-DARTS partial heads,
Xu et al. 2020 https://arxiv.org/abs/1907.05737) against a GDAS step and a single-path step.

Each mode runs in a fresh child process (its own peak RSS over its baseline), one after the
other in one invocation, so the ratios share the machine's load. The single path is the space's
largest arch (every op at full width and depth), the fairest baseline for "what one candidate
costs"; GDAS samples one path. Prints JSON.

    python scripts/benchmarks/darts.py --space search_spaces/lra.yaml --seq-len 1024 --batch 4
"""

from harness import (
    in_child,
    main,
    median,
    parser,
    peak_rss_mib,
    rss_mib,
    seconds,
    settings,
)

MODES = ("single_path", "gdas", "darts_k1", "darts_k2", "darts_k4")


def measure(args, mode: str) -> dict:
    """In the child: `steps` forward+backward steps (none untimed); median time and peak memory."""
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
    base = rss_mib()

    def step():
        if mode == "single_path":
            out = net(tokens, space.largest())
        elif mode == "gdas":
            out = net.forward_mixed(tokens, {k: F.gumbel_softmax(l, hard=True) for k, l in logits.items()}, hard=True)
        else:
            k = int(mode[-1])
            out = net.forward_mixed(
                tokens,
                {k_: F.softmax(l, -1) for k_, l in logits.items()},
                partial=k,
                edges=None if k == 1 else 2 * F.softmax(betas, -1),
            )
        F.cross_entropy(out, target).backward()

    step_s = median(seconds(step, args.steps, warmup=0))
    return {"step_s": round(step_s, 3), "peak_mib": round(peak_rss_mib() - base, 1)}


def sweep(args) -> dict:
    results = {mode: in_child(mode) for mode in args.modes.split(",")}
    single = results.get("single_path")
    ratios = (
        {}
        if single is None
        else {
            f"{mode}_over_single_path": {
                "time": round(r["step_s"] / single["step_s"], 2),
                "memory": round(r["peak_mib"] / single["peak_mib"], 2),
            }
            for mode, r in results.items()
            if mode != "single_path"
        }
    )
    return {"settings": settings(args), "results": results, "ratios": ratios}


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--space", default="search_spaces/lra.yaml")
    cli.add_argument("--seq-len", type=int, default=1024)
    cli.add_argument("--batch", type=int, default=4)
    cli.add_argument("--threads", type=int, default=2)
    cli.add_argument("--steps", type=int, default=2, help="steps per mode; the median time is reported")
    cli.add_argument(
        "--sharing",
        default="entangled",
        choices=["entangled", "separate", "entangled_gain"],
        help="the supernet's Q/K/V/O sharing (nas-search's default is separate)",
    )
    cli.add_argument("--modes", default=",".join(MODES))
    main(cli, sweep, measure)
