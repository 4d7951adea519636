"""Forward+backward time and peak memory of each linear-recurrent and convolutional mixer's core
(nas/ops/mixers) beside PyTorch's fused attention (SDPA), causal and full.

Each (mixer, length) runs in a fresh child process. The core alone is timed, on per-head inputs
(b, h, n, d) and gates that need gradients, without the projections around it: the mixers'
training forms (chunked GLA, retention, the gated delta rule's WY/UT form, Mamba-2's short
convolution and SSD, Hyena's filter MLP and FFT convolution) against `sdpa_causal` and
`sdpa_full`. Per mixer and length: median seconds of a step over --repeats, the ratio to
`sdpa_causal` (to `sdpa_full` for the bidirectional forms), the peak tensor memory of one step
(nas.peak_memory, CPU included) beside the cost model's activation estimate, and achieved GFLOP/s
(fwd+bwd counted as 3x the cost functions' forward FLOPs) as a percentage of a square fp32 matmul
timed in the same child right after. Each child records the 1-minute load average before and
after its case.

The layer with its projections, beside every other op, is `attention.py`'s (`gla`, `retnet`,
`gated_deltanet`, `mamba2`, `hyena` rows); this one isolates the core, whose share of the
matmul rate the projections' dense products would otherwise lift.

    python scripts/benchmarks/mixers.py --lengths 1024 4096 --out bench_mixers.json
    python scripts/benchmarks/mixers.py --lengths 16384 --ops sdpa_causal gla mamba2
"""

import os

from harness import in_child, main, median, parser, seconds, settings, timer_seconds

CAUSAL = ["sdpa_causal", "gla", "retnet", "gated_deltanet", "mamba2", "hyena"]
BIDIRECTIONAL = ["sdpa_full", "gla_bi", "gated_deltanet_bi", "mamba2_bi", "hyena_bi"]


def case(label: str, n: int, args):
    """In the child: (inputs that need gradients, forward(), forward FLOPs, activation elements)."""
    import torch
    from torch.nn import functional as F

    from nas.ops.mixers import gated_deltanet, gla, hyena, mamba2

    b, h, d, c = args.batch, args.heads, args.dim // args.heads, args.chunk
    leaf = lambda *shape: torch.randn(*shape).requires_grad_()
    q, k, v = leaf(b, h, n, d), leaf(b, h, n, d), leaf(b, h, n, d)
    bi = label.endswith("_bi")
    name = label.removesuffix("_bi")
    if name.startswith("sdpa"):
        causal = name == "sdpa_causal"
        flops = 2 * 2 * h * d * (n * (n + 1) // 2 if causal else n * n)
        return [q, k, v], lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), flops, 0
    if name in ("gla", "retnet"):
        per_dim = name == "gla"
        logits = leaf(b, h, n, d) if per_dim else None
        fixed = gla.retention_log_decay(h)[:, None].expand(b, h, n)
        gates = (lambda: gla.gla_gate(logits)) if per_dim else (lambda: fixed)
        run = (lambda: gla.gla_bidirectional(q, k, v, gates(), chunk=c, sub_chunk=args.sub_chunk)) if bi else None
        run = run or (lambda: gla.gla_chunked(q, k, v, gates(), chunk=c, sub_chunk=args.sub_chunk)[0])
        flops = gla.gla_flops(n, h, d, d, c, args.sub_chunk, per_dim)
        elements = gla.gla_activation_elements(n, h, d, d, c, args.sub_chunk, per_dim)
        return [q, k, v] + ([logits] if per_dim else []), run, flops * (1 + bi), elements * (1 + bi)
    if name == "gated_deltanet":
        a, beta_logits = leaf(b, h, n), leaf(b, h, n)
        A_log, dt_bias = torch.zeros(h, requires_grad=True), torch.zeros(h, requires_grad=True)

        def run():
            g, beta = gated_deltanet.gated_delta_gates(a, beta_logits, A_log, dt_bias)
            keys = F.normalize(k, dim=-1)
            if bi:
                return gated_deltanet.gated_delta_bidirectional(q, keys, v, g, beta, chunk=c)
            return gated_deltanet.gated_delta_chunked(q, keys, v, g, beta, chunk=c)[0]

        flops = gated_deltanet.gated_delta_flops(n, h, d, d, c)
        elements = gated_deltanet.gated_delta_activation_elements(n, h, d, d, c)
        return [q, k, v, a, beta_logits, A_log, dt_bias], run, flops * (1 + bi), elements * (1 + bi)
    if name == "mamba2":
        N, w = args.state_dim, 4
        B, C, dt_raw = leaf(b, h, n, N), leaf(b, h, n, N), leaf(b, h, n)
        A_log, dt_bias = mamba2.init_A_log(h).requires_grad_(), mamba2.init_dt_bias(h).requires_grad_()
        D, weight, bias = leaf(h), leaf(h, d + 2 * N, w), leaf(h, d + 2 * N)

        def run():
            dt, A = mamba2.mamba2_dt(dt_raw, dt_bias), -A_log.exp()
            if bi:
                return mamba2.mamba2_bidirectional(v, B, C, dt, A, D, weight, bias, chunk=c)
            return mamba2.mamba2_causal(v, B, C, dt, A, D, weight, bias, chunk=c)[0]

        flops = mamba2.mamba2_flops(n, h, d, N, w, c) + bi * mamba2.ssd_flops(n, h, d, N, c)
        elements = mamba2.mamba2_activation_elements(n, h, d, N, w, c) + bi * mamba2.ssd_activation_elements(
            n, h, d, N, c
        )
        return [v, B, C, dt_raw, A_log, dt_bias, D, weight, bias], run, flops, elements
    if name == "hyena":
        filt = hyena.ImplicitFilter(h, d, n, two_sided=bi)
        op = hyena.hyena_bidirectional if bi else hyena.hyena_causal
        flops = hyena.hyena_flops(n, h, d, two_sided=bi)
        elements = hyena.hyena_activation_elements(n, h, d, two_sided=bi)
        return [q, k, v, *filt.parameters()], lambda: op(q, k, v, filt(n), filt.skip), flops, elements
    raise ValueError(label)


def matmul_gflops(args) -> float:
    """fp32 GFLOP/s of a square matmul, the machine's practical peak."""
    import torch

    a, b = (torch.randn(args.matmul_size, args.matmul_size) for _ in range(2))
    return round(2 * args.matmul_size**3 / timer_seconds(lambda: a @ b) / 1e9, 1)


def measure(args, label: str, n: int) -> dict:
    """Runs in the child: one mixer's forward+backward at length n."""
    import torch

    from nas.cpu_allocator import reuse_freed_memory
    from nas.peak_memory import PeakMemory

    load_before = os.getloadavg()[0]
    reuse_freed_memory()  # the CLIs' setting
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    leaves, forward, flops, elements = case(label, n, args)

    def step():
        forward().sum().backward()
        for x in leaves:
            x.grad = None

    step()  # warm-up
    with PeakMemory() as memory:
        step()
    step_s = median(seconds(step, args.repeats, warmup=0))
    return {
        "seconds": step_s,
        "peak_mib": round(memory.peak / 2**20, 1),
        "estimate_mib": round(elements * 4 / 2**20, 1),
        "forward_gflop": round(flops / 1e9, 3),
        "matmul_gflops": matmul_gflops(args),
        "loadavg_1min": [load_before, os.getloadavg()[0]],  # before and after the case
    }


def sweep(args) -> dict:
    results: dict = {label: {} for label in args.ops}
    for n in args.lengths:
        for label in args.ops:
            row = in_child(label, n, keep_errors=True)
            if "seconds" in row:
                gflops = 3 * row["forward_gflop"] / row["seconds"]
                row |= {"gflops": round(gflops, 1), "pct_of_matmul": round(100 * gflops / row["matmul_gflops"], 1)}
            results[label][n] = row
        for label in args.ops:
            baseline = "sdpa_full" if label in BIDIRECTIONAL else "sdpa_causal"
            row, base = results[label][n], results.get(baseline, {}).get(n, {})
            if "seconds" in row and "seconds" in base:
                row["ratio_to_sdpa"] = round(row["seconds"] / base["seconds"], 3)
                row["memory_ratio_to_sdpa"] = round(row["peak_mib"] / max(base["peak_mib"], 0.1), 3)
    return {"settings": settings(args), "results": results}


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--ops", nargs="+", default=CAUSAL + BIDIRECTIONAL, choices=CAUSAL + BIDIRECTIONAL)
    cli.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096])
    cli.add_argument("--batch", type=int, default=1)
    cli.add_argument("--dim", type=int, default=256, help="heads * head dim")
    cli.add_argument("--heads", type=int, default=4)
    cli.add_argument("--state-dim", type=int, default=64, help="Mamba-2's N")
    cli.add_argument("--chunk", type=int, default=64)
    cli.add_argument("--sub-chunk", type=int, default=16, help="GLA's secondary chunks")
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--threads", type=int, default=2)
    cli.add_argument("--matmul-size", type=int, default=2048)
    main(cli, sweep, measure)
