"""Mamba-2's state-space-duality layer, SSD (Dao and Gu 2024, https://arxiv.org/abs/2405.21060).

h_t = exp(A dt_t) h_{t-1} + dt_t B_t x_t^T, y_t = h_t^T C_t + D x_t: a selective SSM whose decay is
one scalar per head and position. The paper's duality reads it as masked linear attention with
C as queries, dt B as keys, x as values and A dt as the log decay, so the chunked SSD algorithm
(sec. 6, "ssd_minimal": diagonal blocks by the segment-sum decay matrix, chunk states, state
passing, state-to-output) is chunks.py's scalar-decay form. Before the SSM, x, B and C pass the
short causal depthwise convolution and SiLU (short_conv.py), as in the Mamba-2 block; `mamba2_causal`
and `mamba2_step` run both, the step on a `Mamba2State` of fixed shape. The bidirectional form is
bidirectional.py's, with the centred convolution.
# b batch, h heads, n sequence, p head dim (of x), N state dim (of B, C), w conv width
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.mixers.bidirectional import backward_scan
from nas.ops.mixers.chunks import chunk_size, scalar_decay_activations, scalar_decay_chunked
from nas.ops.mixers.short_conv import (
    causal_conv,
    causal_conv_step,
    centered_conv,
    conv_flops,
    conv_state_elements,
    conv_step_flops,
    zero_padding,
)


def mamba2_dt(dt_raw: Tensor, dt_bias: Tensor) -> Tensor:
    """Step sizes dt = softplus(dt_raw + dt_bias) > 0. Shape: (b, h, n), (h,) -> (b, h, n)."""
    return F.softplus(dt_raw + dt_bias[:, None])


def init_dt_bias(heads: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> Tensor:
    """(h,) Mamba-2's dt_bias: softplus^-1 of step sizes drawn log-uniformly in [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)


def init_A_log(heads: int, low: float = 1.0, high: float = 16.0) -> Tensor:
    """(h,) Mamba-2's A_log: A = -exp(A_log) drawn uniformly in [-high, -low]."""
    return torch.empty(heads).uniform_(low, high).log()


def _masked(dt: Tensor, mask: Tensor | None) -> Tensor:
    """dt = 0 at a padded position: it neither writes (dt B) nor decays (A dt)."""
    return dt if mask is None else dt * mask[:, None, :].to(dt.dtype)


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    chunk: int = 64,
    state: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The causal SSD, chunked.

    Args:
        x: (b, h, n, p) inputs; dt: (b, h, n) step sizes (> 0); A: (h,) negative rates.
        B, C: (b, h, n, N), or (b, 1, n, N) shared by all heads (one group).
        D: (h,) skip, or None.
        chunk: positions per chunk.
        state: (b, h, N, p) before position 0, or None for zeros.
        mask: (b, n) bool, True = real token; padded positions neither write nor decay.

    Returns:
        (b, h, n, p) outputs and the (b, h, N, p) state after the last position.
    """
    dt = _masked(dt, mask)
    C = C.expand(-1, x.shape[1], -1, -1)
    y, state = scalar_decay_chunked(C, B * dt[..., None], x, A[:, None] * dt, chunk, state)
    return (y if D is None else y + D[:, None, None] * x), state


def ssd_step(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, state: Tensor
) -> tuple[Tensor, Tensor]:
    """One decoding step. Shape: x (b, h, p), dt (b, h), A (h,), B, C (b, h or 1, N), D (h,) or None,
    state (b, h, N, p) -> output (b, h, p), the next state."""
    decay = (A * dt).exp()[..., None, None]  # (b, h, 1, 1)
    state = decay * state + (dt[..., None] * B)[..., :, None] * x[..., None, :]  # (b, h, N, p)
    y = (C[..., None, :] @ state).squeeze(-2)  # (b, h, p)
    return (y if D is None else y + D[:, None] * x), state


def ssd_bidirectional(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    chunk: int = 64,
    mask: Tensor | None = None,
    dt_backward: Tensor | None = None,
) -> Tensor:
    """The forward SSD (s <= t, and D x once) plus the backward one (s > t), bidirectional.py's
    construction; `dt_backward` gives the backward scan its own step sizes (Hydra's separate dt).
    Shape: as `ssd_chunked`'s, -> (b, h, n, p)."""
    dt = _masked(dt, mask)
    dt_backward = dt if dt_backward is None else _masked(dt_backward, mask)
    C = C.expand(-1, x.shape[1], -1, -1)
    scan = lambda C_, x_, dt_, B_: ssd_chunked(x_, dt_, A, B_, C_, None, chunk)[0]
    forward = ssd_chunked(x, dt, A, B, C, D, chunk)[0]
    return forward + backward_scan(scan, C, x, dt_backward, B.expand_as(C))


class Mamba2State(NamedTuple):
    """What decoding carries from token to token: fixed shapes, whatever the context length."""

    ssm: Tensor  # (b, h, N, p)
    conv: Tensor  # (b, h, p + 2N, w - 1): the last w - 1 inputs of x, B and C


def mamba2_causal(
    x: Tensor,
    B: Tensor,
    C: Tensor,
    dt: Tensor,
    A: Tensor,
    D: Tensor | None,
    conv_weight: Tensor,
    conv_bias: Tensor | None = None,
    chunk: int = 64,
    state: Mamba2State | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Mamba2State]:
    """The causal short convolution and SiLU over [x, B, C] per head, then `ssd_chunked`.

    Shape: x (b, h, n, p), B, C (b, h, n, N), dt (b, h, n), A, D (h,), conv_weight (h, p + 2N, w),
    conv_bias (h, p + 2N) -> (b, h, n, p), and the state after the last position.
    """
    p, N = x.shape[-1], B.shape[-1]
    xBC = zero_padding(torch.cat([x, B, C], dim=-1), mask)
    xBC, conv = causal_conv(xBC, conv_weight, conv_bias, None if state is None else state.conv)
    x, B, C = (part.contiguous() for part in F.silu(xBC).split([p, N, N], dim=-1))  # else matmuls copy them
    y, ssm = ssd_chunked(x, dt, A, B, C, D, chunk, None if state is None else state.ssm, mask)
    return y, Mamba2State(ssm, conv)


def mamba2_step(
    x: Tensor,
    B: Tensor,
    C: Tensor,
    dt: Tensor,
    A: Tensor,
    D: Tensor | None,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    state: Mamba2State,
) -> tuple[Tensor, Mamba2State]:
    """One decoding step of `mamba2_causal`. Shape: x (b, h, p), B, C (b, h, N), dt (b, h) -> (b, h, p)."""
    p, N = x.shape[-1], B.shape[-1]
    xBC, conv = causal_conv_step(torch.cat([x, B, C], dim=-1), state.conv, conv_weight, conv_bias)
    x, B, C = F.silu(xBC).split([p, N, N], dim=-1)
    y, ssm = ssd_step(x, dt, A, B, C, D, state.ssm)
    return y, Mamba2State(ssm, conv)


def mamba2_bidirectional(
    x: Tensor,
    B: Tensor,
    C: Tensor,
    dt: Tensor,
    A: Tensor,
    D: Tensor | None,
    conv_weight: Tensor,
    conv_bias: Tensor | None = None,
    chunk: int = 64,
    mask: Tensor | None = None,
    dt_backward: Tensor | None = None,
) -> Tensor:
    """The centred short convolution and SiLU, then `ssd_bidirectional`. Shapes as `mamba2_causal`'s."""
    p, N = x.shape[-1], B.shape[-1]
    xBC = zero_padding(torch.cat([x, B, C], dim=-1), mask)
    x, B, C = (
        part.contiguous() for part in F.silu(centered_conv(xBC, conv_weight, conv_bias)).split([p, N, N], dim=-1)
    )
    return ssd_bidirectional(x, dt, A, B, C, D, chunk, mask, dt_backward)


# -- cost: forward FLOPs (matmuls and the convolution), decode state
def ssd_flops(n: int, heads: int, head_dim: int, state_dim: int, chunk: int = 64) -> int:
    """Matmul FLOPs of `ssd_chunked` for one sequence (C B^T, its product with x, the chunk states
    and their read-out)."""
    c = chunk_size(n, chunk)
    m = -(-n // c)
    p, N = head_dim, state_dim
    return heads * m * (2 * c * c * N + 2 * c * c * p + 2 * c * N * p * 2)


def mamba2_flops(n: int, heads: int, head_dim: int, state_dim: int, conv_width: int = 4, chunk: int = 64) -> int:
    """FLOPs of `mamba2_causal`: the short convolution over x, B, C, and the SSD."""
    conv = conv_flops(n, heads * (head_dim + 2 * state_dim), conv_width)
    return conv + ssd_flops(n, heads, head_dim, state_dim, chunk)


def ssd_activation_elements(n: int, heads: int, head_dim: int, state_dim: int, chunk: int = 64) -> int:
    """Elements `ssd_chunked` keeps for backward for one sequence, beside its inputs."""
    return scalar_decay_activations(n, heads, state_dim, head_dim, chunk)


def mamba2_activation_elements(
    n: int, heads: int, head_dim: int, state_dim: int, conv_width: int = 4, chunk: int = 64
) -> int:
    """Elements `mamba2_causal` keeps for backward for one sequence, beside its inputs: the SSD's,
    and [x, B, C] before the convolution (with the w - 1 state inputs), after it, and after SiLU."""
    channels = heads * (head_dim + 2 * state_dim)
    conv = (n + conv_width - 1) * channels + 2 * n * channels
    if n % chunk_size(n, chunk):  # the SSD keeps zero-padded copies of x and C instead
        conv -= n * heads * (head_dim + state_dim)
    return conv + ssd_activation_elements(n, heads, head_dim, state_dim, chunk)


def mamba2_step_flops(heads: int, head_dim: int, state_dim: int, conv_width: int = 4) -> int:
    """Matrix products of one decoding step of `mamba2_step`: the convolution's window, and C
    against the (N, p) state."""
    return conv_step_flops(heads * (head_dim + 2 * state_dim), conv_width) + heads * 2 * state_dim * head_dim


def mamba2_state_bytes(
    heads: int, head_dim: int, state_dim: int, conv_width: int = 4, bytes_per_element: int = 4
) -> int:
    """Decoding state of one sequence, `Mamba2State`: the (h, N, p) SSM state and the convolution's
    last w - 1 inputs, whatever the context length."""
    conv = conv_state_elements(heads * (head_dim + 2 * state_dim), conv_width)
    return (heads * state_dim * head_dim + conv) * bytes_per_element
