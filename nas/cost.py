"""What an architecture costs: parameters, forward FLOPs and activation memory at a sequence
length (analytic), and measured latency of its standalone subnet on the current device."""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from nas.ops.attention import AttentionCore, make_core
from nas.space import Arch, SearchSpace

BYTES_PER_ELEMENT = 4  # fp32


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int  # forward pass of the whole batch
    activation_mib: float  # activations kept for backward, whole batch (an estimate)


@dataclass(frozen=True)
class ModelShape:
    """What besides the arch and space decides the cost: the task's sizes."""

    vocab_size: int
    num_classes: int
    max_len: int
    head: str = "classify"


def params(arch: Arch, space: SearchSpace, shape: ModelShape) -> int:
    """Exact parameter count of the standalone subnet for `arch`."""
    d = space.dim
    total = shape.vocab_size * d + shape.max_len * d  # token and position embeddings
    total += 2 * d + d * shape.num_classes + shape.num_classes  # final norm, readout
    for layer in arch.layers:
        core = _core(space, layer.attention, shape.max_len)
        inner = layer.heads * space.head_dim
        total += 4 * d  # two layer norms
        total += len(core.inputs) * (d * inner + inner) + inner * d + d  # projections, output
        total += core.num_params(layer.heads)
        total += d * layer.ffn_dim + layer.ffn_dim + layer.ffn_dim * d + d  # feed-forward
    return total


def flops(arch: Arch, space: SearchSpace, shape: ModelShape, seq_len: int, batch_size: int = 1) -> int:
    """Forward floating-point operations (2 per multiply-add) of the matrix products."""
    d, n = space.dim, seq_len
    total = 0
    for layer in arch.layers:
        core = _core(space, layer.attention, shape.max_len)
        inner = layer.heads * space.head_dim
        total += 2 * n * d * inner * (len(core.inputs) + 1)  # projections and output
        total += core.flops(n, layer.heads)
        total += 2 * 2 * n * d * layer.ffn_dim  # feed-forward
    total += 2 * d * shape.num_classes * (n if shape.head == "tokens" else 1)
    return total * batch_size


def activation_bytes(arch: Arch, space: SearchSpace, shape: ModelShape, seq_len: int,
                     batch_size: int = 1) -> int:
    """Estimate of the activations a training step keeps for backward."""
    d, n = space.dim, seq_len
    elements = n * d  # embeddings
    for layer in arch.layers:
        core = _core(space, layer.attention, shape.max_len)
        inner = layer.heads * space.head_dim
        elements += 4 * n * d  # two norms' inputs and outputs
        elements += n * inner * (len(core.inputs) + 1)  # projected inputs, merged heads
        elements += core.activation_elements(n, layer.heads)
        elements += 2 * n * layer.ffn_dim  # hidden units before and after the activation
    return elements * batch_size * BYTES_PER_ELEMENT


def estimate(arch: Arch, space: SearchSpace, shape: ModelShape, seq_len: int,
             batch_size: int = 1) -> Cost:
    return Cost(
        params=params(arch, space, shape),
        flops=flops(arch, space, shape, seq_len, batch_size),
        activation_mib=activation_bytes(arch, space, shape, seq_len, batch_size) / 2**20,
    )


@torch.no_grad()
def measure_latency_ms(model: nn.Module, seq_len: int, vocab_size: int, batch_size: int = 1,
                       repeats: int = 10, warmup: int = 2) -> float:
    """Median forward latency of `model(tokens)` in milliseconds, on the model's device."""
    device = next(model.parameters()).device
    tokens = torch.randint(1, vocab_size, (batch_size, seq_len), device=device)
    was_training = model.training
    model.eval()
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times)


@functools.lru_cache(maxsize=None)
def _core(space: SearchSpace, candidate: str, max_len: int) -> AttentionCore:
    """The candidate's core on the meta device: it answers shape questions without memory."""
    choice = space.attention[candidate]
    with torch.device("meta"):
        return make_core(choice.type, space.head_dim, space.max_heads, max_len, **choice.options)
