"""What an architecture costs: parameters, forward FLOPs and activation memory at a sequence
length (analytic, layer by layer), and the measured latency of a model on the current device.

Costs are additive over layers (`layer_cost`) plus a part every arch pays (`base_cost`), which
is what lets a differentiable controller take the expected cost of an architecture distribution.
One exception: with reversible layers (the space's `memory.reversible`) backward recomputes one
layer at a time, so activation memory is the largest layer's, not the sum (`arch_cost`).

A causal model of token ids also has decoding costs at a context of `seq_len` tokens: the step
state one sequence keeps (`state_mib`: KV caches, ring buffers, prefix sums, recurrent states,
as each op's `state_elements` declares) and the FLOPs of one decoding step (`decode_flops`).
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec, forecast_params, make_block, pair_hidden, random_input, readout_params
from nas.ops.attention import AttentionCore, make_core
from nas.space import Arch, LayerArch, SearchSpace

BYTES_PER_ELEMENT = 4  # fp32
# The largest model LongNAS builds: 2^31 parameters (8 GiB of float32 weights, 32 GiB to train
# with Adam) and 1 TiB of activations for one sequence at max_len. Far past any model searched
# here (the largest space: under 100M parameters), far below what a typo or a crafted file asks
# for (heads: [4000000], a 1e9 vocabulary), which would allocate for minutes and then end in a
# MemoryError or the OOM killer; a bound refuses them before any allocation, naming the memory.
MAX_PARAMS = 2**31
MAX_ACTIVATION_BYTES = 2**40
# memory: activation MiB; latency: ms; state_mib: decoding state MiB per sequence; decode_flops: per token;
# exact_layers: layers of exact attention (a hybrid's budget of them, as `strategy.constraints`)
KINDS = ("params", "flops", "memory", "latency", "state_mib", "decode_flops", "exact_layers")
DECODE_KINDS = ("state_mib", "decode_flops")  # causal models of token ids only
EXACT_OPS = ("full",)  # the ops that attend to every key exactly (softmax over all of them)
UNITS = {  # each kind's unit, for messages
    "params": "params",
    "flops": "FLOPs",
    "memory": "MiB",
    "latency": "ms",
    "state_mib": "MiB",
    "decode_flops": "FLOPs per token",
    "exact_layers": "exact-attention layers",
}


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int  # forward pass of the whole batch
    activation_mib: float  # activations kept for backward, whole batch (an estimate)
    state_mib: float | None = None  # causal models: decoding state of the whole batch at the context
    decode_flops: int | None = None  # causal models: one decoding step of the whole batch at the context


def layer_cost(layer: LayerArch, space: SearchSpace, shape: ModelShape, seq_len: int, kind: str) -> float:
    """One layer's cost for one example of `seq_len` steps; latency is measured (a lookup
    table of layer latencies, as in FBNet), the other kinds are analytic. The layer runs on
    `shape.sequences` sequences of `shape.positions(seq_len)` positions per example (a forecast:
    one per channel, of patches), so all but its parameters count that many times."""
    if kind == "exact_layers":  # 1 for a layer of exact attention, whatever its size
        return float(space.attention[layer.attention].type in EXACT_OPS)
    if kind == "latency":
        latency = _layer_latency_ms(layer, space, shape.positions(), shape.positions(seq_len), shape.causal)
        return latency * shape.sequences
    d, n = space.dim, shape.positions(seq_len)
    core = _core(space, layer.attention, shape.positions(), shape.causal)
    inner = layer.heads * space.head_dim
    if kind in DECODE_KINDS:
        check_decodes(shape, kind)
        if kind == "state_mib":
            return core.state_elements(n, layer.heads) * BYTES_PER_ELEMENT / 2**20
        # the token's projections and feed-forward, and the core's step at a context of n tokens
        return 2 * (len(core.inputs) + 1) * d * inner + core.step_flops(n, layer.heads) + 2 * 2 * d * layer.ffn_dim
    if kind == "params":
        return (
            4 * d  # two layer norms
            + (len(core.inputs)) * (d * inner + inner)
            + inner * d
            + d
            + core.num_params(layer.heads)
            + d * layer.ffn_dim
            + layer.ffn_dim
            + layer.ffn_dim * d
            + d
        )
    if kind == "flops":  # 2 per multiply-add, matrix products only
        return (attention_flops(core, n, d, layer.heads) + 2 * 2 * n * d * layer.ffn_dim) * shape.sequences
    if kind == "memory":
        mixed = core.mixed_rows(n)
        attention = (
            2 * n * d  # norm1's input and output
            + sum(mixed.values()) * d  # rows mixed from the tokens (Linformer)
            + _projected_rows(core, n) * inner  # projected inputs
            + n * inner  # merged heads
            + core.activation_elements(n, layer.heads)
        )
        # norm2's input, then its output and the hidden units before and after the activation;
        # in chunks those are recomputed in backward one chunk at a time
        ffn = n * d + (n * d + 2 * n * layer.ffn_dim) / space.memory.ffn_chunks
        return (attention + ffn) * shape.sequences * BYTES_PER_ELEMENT / 2**20
    raise ConfigError(f"unknown cost '{kind}'; allowed: {', '.join(KINDS)}")


def attention_flops(core: AttentionCore, n: int, dim: int, heads: int) -> int:
    """Forward FLOPs of one self-attention layer: any token mixes, the projections, the core."""
    inner = heads * core.head_dim
    mixed = core.mixed_rows(n)
    rows = _projected_rows(core, n) + n  # the inputs', and the output's
    return 2 * sum(mixed.values()) * n * dim + 2 * rows * dim * inner + core.flops(n, heads)


def _projected_rows(core: AttentionCore, n: int) -> int:
    """Rows the input projections run over: n per input, or its mixed rows (Linformer's k)."""
    mixed = core.mixed_rows(n)
    return sum(mixed.get(name, n) for name in core.inputs)


def check_decodes(shape: ModelShape, kind: str) -> None:
    """One line unless a model of `shape` decodes token by token (a decoding cost's premise)."""
    if not shape.causal or shape.input != "ids":
        raise ConfigError(
            f"cost '{kind}' is a decoding cost, for causal models of token ids; this task's model is "
            f"{'causal' if shape.causal else 'bidirectional'} with input {shape.input}"
        )


def base_cost(space: SearchSpace, shape: ModelShape, seq_len: int, kind: str) -> float:
    """The cost every arch pays: embeddings and readout."""
    d, c = space.dim, shape.num_classes
    if kind == "exact_layers":
        return 0.0
    if kind in DECODE_KINDS:
        check_decodes(shape, kind)
        return 0.0 if kind == "state_mib" else 2 * d * c  # the step's state is its layers'; one readout row
    if shape.input == "values":
        return _forecast_base_cost(space, shape, seq_len, kind)
    if kind == "params":
        return shape.vocab_size * d + shape.max_len * d + readout_params(d, c, shape.readout)
    if kind == "flops":
        if shape.readout == "pair":  # the pair head's three layers, once per pair
            h = pair_hidden(d)
            return 2 * (4 * d * d + d * h + h * c)
        return 2 * d * c * (seq_len if shape.readout == "tokens" else 1)
    if kind == "memory":
        return seq_len * d * shape.sequences * BYTES_PER_ELEMENT / 2**20
    if kind == "latency":
        return 0.0  # an embedding lookup and a readout: small next to the layers
    raise ConfigError(f"unknown cost '{kind}'; allowed: {', '.join(KINDS)}")


def _forecast_base_cost(space: SearchSpace, shape: ModelShape, seq_len: int, kind: str) -> float:
    """`base_cost` of a forecaster: the patch embedding and the flatten head, once per channel."""
    d, n = space.dim, shape.positions(seq_len)
    if kind == "params":
        return sum(forecast_params(d, shape))
    if kind == "flops":
        return 2 * n * d * (shape.patch_len + shape.num_classes) * shape.channels
    if kind == "memory":
        return n * d * shape.channels * BYTES_PER_ELEMENT / 2**20
    if kind == "latency":
        return 0.0
    raise ConfigError(f"unknown cost '{kind}'; allowed: {', '.join(KINDS)}")


def arch_cost(arch: Arch, space: SearchSpace, shape: ModelShape, seq_len: int, kind: str) -> float:
    """The cost of `arch` for one sequence (latency: the sum of its layers' measured latencies).

    Memory of reversible layers: backward keeps the last layer's output pair and recomputes one
    layer at a time, so it costs the pair plus the largest layer, whatever the depth.
    """
    layers = [layer_cost(layer, space, shape, seq_len, kind) for layer in arch.layers]
    base = base_cost(space, shape, seq_len, kind)
    if kind == "memory" and space.memory.reversible:
        return base + reversible_pair_mib(space, shape, seq_len) + max(layers)
    return base + sum(layers)


def reversible_pair_mib(space: SearchSpace, shape: ModelShape, seq_len: int) -> float:
    """The output pair (x1, x2) that reversible layers keep for backward, in MiB per example of
    `seq_len` steps: over the positions the blocks see (patches of a series), of every sequence."""
    positions = shape.positions(seq_len) * shape.sequences
    return 2 * positions * space.dim * BYTES_PER_ELEMENT / 2**20


def params(spec: ModelSpec) -> int:
    """Exact parameter count of the standalone subnet of `spec`."""
    return int(arch_cost(spec.arch, spec.space, spec.shape, spec.shape.max_len, "params"))


def flops(spec: ModelSpec, seq_len: int, batch_size: int = 1) -> int:
    """Forward floating-point operations (2 per multiply-add) of the matrix products."""
    return int(arch_cost(spec.arch, spec.space, spec.shape, seq_len, "flops")) * batch_size


def estimate(spec: ModelSpec, seq_len: int, batch_size: int = 1) -> Cost:
    """The costs of `spec` at `seq_len`; a model that decodes (causal, token ids) also its
    decoding state and step FLOPs at a context of `seq_len` tokens."""
    arch, space, shape = spec.arch, spec.space, spec.shape
    decodes = shape.causal and shape.input == "ids"
    return Cost(
        params=params(spec),
        flops=flops(spec, seq_len, batch_size),
        activation_mib=arch_cost(arch, space, shape, seq_len, "memory") * batch_size,
        state_mib=arch_cost(arch, space, shape, seq_len, "state_mib") * batch_size if decodes else None,
        decode_flops=int(arch_cost(arch, space, shape, seq_len, "decode_flops")) * batch_size if decodes else None,
    )


def check_size(spec: ModelSpec, source: str) -> None:
    """Refuse the model of `spec` past MAX_PARAMS or MAX_ACTIVATION_BYTES before anything is
    allocated: one ConfigError line naming `source` and the memory the model would need."""
    _check_size(spec, source, "the model")


def check_space_size(space: SearchSpace, shape: ModelShape, source: str) -> None:
    """`check_size` for a supernet: the largest arch of each attention candidate (each a subnet
    of the space's supernet, which holds at least as much)."""
    for cand in space.attention:
        layer = LayerArch(cand, space.max_heads, space.max_ffn_dim)
        largest = ModelSpec(Arch(space.max_depth, (layer,) * space.max_depth), space, shape)
        _check_size(largest, source, f"the largest arch with {cand}")


def _check_size(spec: ModelSpec, source: str, which: str) -> None:
    count = params(spec)
    if count > MAX_PARAMS:
        raise ConfigError(
            f"{source}: {which} would hold {count:,} parameters "
            f"({_gib(count * BYTES_PER_ELEMENT)} of float32 weights), more than the "
            f"{MAX_PARAMS:,} ({_gib(MAX_PARAMS * BYTES_PER_ELEMENT)}) a model may have"
        )
    activations = arch_cost(spec.arch, spec.space, spec.shape, spec.shape.max_len, "memory") * 2**20
    if activations > MAX_ACTIVATION_BYTES:
        raise ConfigError(
            f"{source}: {which} would need {_gib(activations)} of activations for one "
            f"sequence of {spec.shape.max_len} tokens, more than the "
            f"{_gib(MAX_ACTIVATION_BYTES)} a model may take"
        )


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


@torch.no_grad()
def measure_latency_ms(model: nn.Module, inputs: tuple, repeats: int = 10, warmup: int = 2) -> float:
    """Median latency of `model(*inputs)` in milliseconds, on the inputs' device."""
    device = inputs[0].device
    was_training = model.training
    model.eval()
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times)


def subnet_latency_ms(model: nn.Module, seq_len: int, vocab_size: int, batch_size: int = 1, **kwargs) -> float:
    """Median forward latency of a Subnet on random tokens (random values for a forecaster)."""
    device = next(model.parameters()).device
    spec = getattr(model, "spec", None)  # a Subnet's, kept by its int8 copy
    if spec is not None:
        tokens = random_input(spec.shape, batch_size, seq_len).to(device)
    else:
        tokens = torch.randint(1, vocab_size, (batch_size, seq_len), device=device)
    return measure_latency_ms(model, (tokens,), **kwargs)


@functools.cache
def _core(space: SearchSpace, candidate: str, max_len: int, causal: bool = False) -> AttentionCore:
    """The candidate's core on the meta device: it answers shape questions without memory."""
    choice = space.attention[candidate]
    with torch.device("meta"):
        return make_core(choice.type, space.head_dim, space.max_heads, max_len, causal, **choice.options)


@functools.cache
def _layer_latency_ms(layer: LayerArch, space: SearchSpace, max_len: int, seq_len: int, causal: bool) -> float:
    block = make_block(layer, space, max_len, causal)
    return measure_latency_ms(block, (torch.randn(1, seq_len, space.dim), None), repeats=5)
