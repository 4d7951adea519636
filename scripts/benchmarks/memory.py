"""Peak training memory (forward + backward) against depth and sequence length, with and without
reversible layers and the chunked feed-forward (Reformer, https://arxiv.org/abs/2001.04451).

Every configuration runs in a fresh child process, one after the other in one run, and reports
two readings: the peak of tensor storage created by the step (nas.peak_memory, which sees CPU
allocations) and the step's rise of the process's resident-set high-water mark (VmHWM after
resetting it; glibc is told to mmap every block over 64 KiB so that freed tensors leave the
resident set). Both include the parameters' gradients (`grads_mib`); `activation_mib` is the
tensor peak without them. `estimate_mib` is the cost model's activation memory. Prints JSON.

    python scripts/benchmarks/memory.py --depths 2 4 8 --lengths 1024 4096
"""

import json
import os

from harness import (
    high_water_mib,
    in_child,
    main,
    parser,
    reset_high_water,
    rss_mib,
    seconds,
    settings,
)

MODES = {"plain": (False, 1), "chunks4": (False, 4), "reversible": (True, 1), "reversible+chunks4": (True, 4)}


def measure(args, mode: str, depth: int, n: int) -> dict:
    """In the child: one training step of a `depth`-layer model at length n."""
    import torch

    from nas import cost
    from nas.model import ModelShape, ModelSpec, Subnet
    from nas.peak_memory import PeakMemory
    from nas.space import SearchSpace

    torch.set_num_threads(args.threads)
    reversible, chunks = MODES[mode]
    space = SearchSpace.from_dict(
        {
            "name": "bench",
            "dim": args.dim,
            "head_dim": 32,
            "depth": [depth],
            "layer": {
                "attention": {args.attention: args.options},
                "heads": [args.dim // 32],
                "ffn_dim": [4 * args.dim],
            },
            "memory": {"reversible": reversible, "ffn_chunks": chunks},
        }
    )
    shape = ModelShape(vocab_size=32, num_classes=10, max_len=n)
    torch.manual_seed(0)
    spec = ModelSpec(space.largest(), space, shape)
    model = Subnet(spec).train()
    tokens = torch.randint(1, 32, (args.batch, n))
    target = torch.randint(0, 10, (args.batch,))

    def step():
        torch.nn.functional.cross_entropy(model(tokens), target).backward()

    step()  # warm-up: lazily built state, first-touch allocations
    model.zero_grad(set_to_none=True)
    reset_high_water()
    base = rss_mib()
    step_s = seconds(step, 1, warmup=0)[0]
    rss = high_water_mib() - base
    model.zero_grad(set_to_none=True)
    with PeakMemory() as memory:
        step()
    grads = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return {
        "peak_mib": round(memory.peak / 2**20, 1),
        "rss_peak_mib": round(rss, 1),
        "grads_mib": round(grads, 1),
        "activation_mib": round(memory.peak / 2**20 - grads, 1),
        "seconds": round(step_s, 3),
        "estimate_mib": round(cost.estimate(spec, n, args.batch).activation_mib, 1),
    }


def sweep(args) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results: dict = {}
    for n in args.lengths:
        for mode in args.modes:
            for depth in args.depths:
                row = in_child(mode, depth, n, env=env)
                results.setdefault(f"n={n}", {}).setdefault(mode, {})[f"depth={depth}"] = row
    growth = {
        length: {
            mode: round(
                rows[f"depth={max(args.depths)}"]["activation_mib"]
                / rows[f"depth={min(args.depths)}"]["activation_mib"],
                3,
            )
            for mode, rows in modes.items()
        }
        for length, modes in results.items()
    }
    return {
        "settings": settings(args),
        "results": results,
        f"activation_depth{max(args.depths)}_over_depth{min(args.depths)}": growth,
    }


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    cli.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    cli.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    cli.add_argument("--dim", type=int, default=128, help="model width; heads of 32, FFN 4x")
    cli.add_argument("--attention", default="local")
    cli.add_argument("--options", type=json.loads, default={"window": 128}, help="the op's options, JSON")
    cli.add_argument("--batch", type=int, default=1)
    cli.add_argument("--threads", type=int, default=2)
    main(cli, sweep, measure)
