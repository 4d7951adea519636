"""Time per generated token of a causal byte LM: the exported decode step with its cached state
(decode.pt2, as `predict.py --generate` runs it) against re-running the prefix through the
parallel program (model.pt2) for every token.

Per (op, context n), in a fresh child process: a model of --dim, --depth layers of --heads heads
(FFN 4 x dim) of that op (`OPS`: its default options; `retnet` is `gla` with RetNet's fixed
decay) and random weights, max_len n, exported by `nas.export.write_program` and
`write_decode_program` and loaded by nas/predict.py's own loaders. `cached`: median seconds per
token of --tokens steps at positions n - tokens .. n - 1 (the end of the context; a step's work
does not depend on the state's values, so the state is the initial one). `uncached`: median
seconds of model.pt2 on the n-token prefix, what each token costs without a cache; skipped
(null, and model.pt2 not exported) at contexts above --uncached-upto: `full`'s re-run grows
quadratically with the prefix, 16x from 4K to 16K. The two are timed in turn, a round at a
time, on --threads torch threads (default 1: on a machine shared with many busy processes, 2
threads mostly wait for each other; an eager 4K `full` step took 0.95 s with 2 threads and 31
ms with 1 at a load average of 11), with glibc keeping freed memory (nas.cpu_allocator, as
predict.py does; --glibc-defaults: not). `state_mib`: the decode state of one sequence. The load
average is recorded before and after each case: on a shared machine the times are only as good as it.

    python scripts/benchmarks/decode.py --out bench_decode.json
    python scripts/benchmarks/decode.py --contexts 1024 --ops full performer --repeats 3
    python scripts/benchmarks/decode.py --contexts 4096 16384 --uncached-upto 4096 \
        --ops full gla retnet gated_deltanet mamba2 hyena
"""

import os

from harness import in_child, interleaved, main, median, parser, settings

# candidate name -> its layer.attention entry (the op type defaults to the name)
OPS = {
    "full": {},
    "local": {},
    "performer": {},
    "block_recurrent": {},
    "gla": {},
    "retnet": {"type": "gla", "decay": "fixed"},
    "gated_deltanet": {},
    "gated_deltanet_noconv": {"type": "gated_deltanet", "short_conv": 0},
    "mamba2": {},
    "hyena": {},
}


def build(op: str, n: int, args):
    """The model in eval mode (its spec: the op in every layer, vocabulary and outputs of bytes + padding)."""
    import torch

    from nas.model import ModelShape, ModelSpec, Subnet
    from nas.space import Arch, LayerArch, SearchSpace

    space = SearchSpace.from_dict(
        {
            "name": "decode_bench",
            "dim": args.dim,
            "head_dim": args.dim // args.heads,
            "depth": [args.depth],
            "layer": {"attention": {op: OPS[op]}, "heads": [args.heads], "ffn_dim": [4 * args.dim]},
        }
    )
    layers = tuple(LayerArch(op, args.heads, 4 * args.dim) for _ in range(args.depth))
    torch.manual_seed(0)
    return Subnet(ModelSpec(Arch(args.depth, layers), space, ModelShape(257, 257, n, "tokens", causal=True))).eval()


def measure(args, op: str, n: int) -> dict:
    import json
    import tempfile
    from pathlib import Path

    import torch

    from nas import predict
    from nas.cpu_allocator import reuse_freed_memory
    from nas.export import write_decode_program, write_program

    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    if not args.glibc_defaults:
        reuse_freed_memory()
    model = build(op, n, args)
    uncached = args.uncached_upto is None or n <= args.uncached_upto
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        folder = Path(tmp)
        record = {"shape": model.spec.shape.to_dict(), "metric": "bpb"}
        if uncached:  # exporting model.pt2 takes about as long as decode.pt2: only when timed
            record["dynamic_len"] = write_program(model, n, folder / "model.pt2")
        record["decode"] = write_decode_program(model, folder)
        (folder / "model.json").write_text(json.dumps(record))
        step, state = predict.load_decoder(folder)
        prefix = torch.randint(1, 257, (n,)).tolist()

        def cached():
            s = state
            for t in range(n - args.tokens, n):
                _, s = step(torch.tensor([prefix[t]]), torch.tensor(t), s)

        steps = {"cached": cached}
        if uncached:
            parallel, max_len = predict.load(folder)
            inputs = predict.pad([prefix], max_len)  # (1, n) tokens and mask, all real
            steps["uncached"] = lambda: parallel(*inputs)
        times = interleaved(steps, args.repeats)
    cached_s = median(times["cached"]) / args.tokens
    uncached_s = median(times["uncached"]) if "uncached" in times else None
    return {
        "cached_ms_per_token": round(cached_s * 1e3, 3),
        "uncached_ms_per_token": None if uncached_s is None else round(uncached_s * 1e3, 3),
        "speedup": None if uncached_s is None else round(uncached_s / cached_s, 1),
        "state_mib": round(sum(x.nbytes for x in state) / 2**20, 3),
        "threads": torch.get_num_threads(),
        "loadavg_1min": [load_before, os.getloadavg()[0]],  # before and after the case
    }


def sweep(args) -> dict:
    report = {"settings": settings(args), "cpu_count": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    report["results"] = {op: {str(n): in_child(op, n) for n in args.contexts} for op in args.ops}
    report["loadavg_at_end"] = os.getloadavg()
    return report


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    cli.add_argument("--contexts", nargs="+", type=int, default=[1024, 4096])
    cli.add_argument("--dim", type=int, default=128)
    cli.add_argument("--depth", type=int, default=4)
    cli.add_argument("--heads", type=int, default=4)
    cli.add_argument("--tokens", type=int, default=16, help="steps timed per round (cached)")
    cli.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    cli.add_argument("--glibc-defaults", action="store_true", help="leave glibc's malloc settings as they are")
    cli.add_argument("--repeats", type=int, default=5)
    cli.add_argument(
        "--uncached-upto", type=int, help="time the uncached prefix only at contexts up to this (default: all)"
    )
    main(cli, sweep, measure)
