"""Gated linear attention (Yang et al. 2024, https://arxiv.org/abs/2312.06635) and RetNet's retention
(Sun et al. 2023, https://arxiv.org/abs/2307.08621) as its fixed-decay case.

S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t scale, with g_t <= 0 a data-dependent log
decay per key dim (GLA) or one per head and position (g of shape (b, h, n): simple GLA; a constant
per head, `retention_log_decay`, is RetNet). Training runs the chunkwise form (chunks.py): within
a chunk, key dims decaying at different rates make the intra-chunk scores a sum over dk of
q k exp(G_t - G_s); the paper's secondary chunking (sec. 4.2) computes them as matmuls between
sub-chunks, where a reference point keeps both factors <= 1, and in log space within a sub-chunk.
Decoding runs `gla_step` on a (b, h, dk, dv) state. The bidirectional form is bidirectional.py's.
# b batch, h heads, n sequence, m chunks, c chunk, s sub-chunks per chunk, u sub-chunk,
# dk key dim, dv value dim
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.mixers.bidirectional import backward_scan
from nas.ops.mixers.chunks import (
    chunk_size,
    from_chunks,
    inter_chunk,
    padding_elements,
    scalar_decay_activations,
    scalar_decay_chunked,
    scalar_decay_flops,
    to_chunks,
)


def gla_gate(logits: Tensor, normalizer: float = 16.0) -> Tensor:
    """The paper's gate alpha = sigmoid(x W)^(1/normalizer), as a log decay: logsigmoid / normalizer.
    The normalizer (16 in the paper) keeps decays near 1 at the start of training."""
    return F.logsigmoid(logits) / normalizer


def retention_log_decay(heads: int, device: torch.device | str | None = None) -> Tensor:
    """(h,) RetNet's fixed log decays, log(1 - 2^(-5 - i)) for head i: each head a different span."""
    i = torch.arange(heads, dtype=torch.float32, device=device)
    return torch.log1p(-(2.0 ** (-5.0 - i)))


def _masked(k: Tensor, g: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """A padded position writes nothing and decays nothing: as if it were not there."""
    if mask is None:
        return k, g
    keep = mask[:, None, :].to(k.dtype)  # (b, 1, n)
    return k * keep[..., None], g * (keep[..., None] if g.dim() == 4 else keep)


def gla_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    scale: float | None = None,
    chunk: int = 64,
    sub_chunk: int = 16,
    state: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The causal form, chunkwise-parallel.

    Args:
        q, k: (b, h, n, dk); v: (b, h, n, dv).
        g: (b, h, n, dk) log decays per key dim, or (b, h, n) one per head (<= 0).
        scale: on the queries; default dk^-0.5.
        chunk, sub_chunk: c positions per chunk, u per sub-chunk (c a multiple of u).
        state: (b, h, dk, dv) before position 0, or None for zeros.
        mask: (b, n) bool, True = real token; padded positions neither write nor decay.

    Returns:
        (b, h, n, dv) outputs and the (b, h, dk, dv) state after the last position.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k, g = _masked(k, g, mask)
    if g.dim() == 3:
        return scalar_decay_chunked(q * scale, k, v, g, chunk, state)
    n = q.shape[2]
    c = chunk_size(n, chunk, sub_chunk)
    u = min(sub_chunk, c)
    q, k, v, g = (to_chunks(x, c) for x in (q * scale, k, v, g))  # (b, h, m, c, .)
    G = g.cumsum(3)  # (b, h, m, c, dk)
    intra = _intra_chunk_scores(q, k, G, u) @ v  # (b, h, m, c, dv)
    last = G[:, :, :, -1]  # (b, h, m, dk)
    inter, state = inter_chunk(q * G.exp(), k * (last[:, :, :, None] - G).exp(), v, last.exp(), state)
    return from_chunks(intra + inter, n), state


def _intra_chunk_scores(q: Tensor, k: Tensor, G: Tensor, u: int) -> Tensor:
    """(b, h, m, c, c): sum over dk of q_t k_s exp(G_t - G_s) for s <= t within each chunk, else 0.

    Sub-chunk i's queries against an earlier sub-chunk j's keys are one matmul: with R_i the
    cumulative decay at i's first position, exp(G_t - R_i) and exp(R_i - G_s) are both <= 1. Within
    a sub-chunk the exponent is formed before exp, as the paper does in full precision (_WithinSubChunk).
    """
    b, h, m, c, dk = q.shape
    s = c // u
    qs, ks, Gs = (x.view(b, h, m, s, u, dk) for x in (q, k, G))
    R = Gs[:, :, :, :, :1]  # (b, h, m, s, 1, dk)
    earlier = torch.ones(s, s, dtype=torch.bool, device=q.device).tril(-1)  # (s_i, s_j): j before i
    key_decay = torch.where(earlier[:, :, None, None], R[:, :, :, :, None] - Gs[:, :, :, None], -torch.inf).exp()
    kh = (ks[:, :, :, None] * key_decay).view(b, h, m, s, s * u, dk)  # (b, h, m, s_i, s_j u, dk)
    across = (qs * (Gs - R).exp()) @ kh.transpose(-1, -2)  # (b, h, m, s_i, u, s_j u)

    # without autograd, the plain loop: TorchScript cannot hold a Python autograd Function (int8 export)
    within = (_WithinSubChunk.apply if torch.is_grad_enabled() else _within_sub_chunk)(qs, ks, Gs)  # (b, h, m, s, u, u)
    diagonal = torch.eye(s, dtype=q.dtype, device=q.device)[:, None, :, None]  # (s_i, 1, s_j, 1)
    scores = across.view(b, h, m, s, u, s, u) + within[:, :, :, :, :, None, :] * diagonal
    return scores.view(b, h, m, c, c)


class _WithinSubChunk(torch.autograd.Function):
    """(..., u, dk) q, k, G -> (..., u, u): sum over dk of q_t k_s exp(G_t - G_s) for s <= t, else 0.

    One diagonal s = t - j at a time, in forward and again in backward, so that neither keeps the
    (u, u, dk) decays: autograd would hold two such tensors, u times the size of q.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, G: Tensor) -> Tensor:
        ctx.save_for_backward(q, k, G)
        return _within_sub_chunk(q, k, G)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, G = ctx.saved_tensors
        u = q.shape[-2]
        dq, dk, dG = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(G)
        for j in range(u):
            t, s = slice(j, u), slice(0, u - j)
            weighted = grad.diagonal(-j, -2, -1)[..., None] * (G[..., t, :] - G[..., s, :]).exp()  # (..., u - j, dk)
            dq[..., t, :] += weighted * k[..., s, :]
            dk[..., s, :] += weighted * q[..., t, :]
            term = weighted * q[..., t, :] * k[..., s, :]  # d out / d G_t, and minus that for G_s
            dG[..., t, :] += term
            dG[..., s, :] -= term
        return dq, dk, dG


def _within_sub_chunk(q: Tensor, k: Tensor, G: Tensor) -> Tensor:
    """`_WithinSubChunk`'s forward: (..., u, dk) q, k, G -> (..., u, u), one diagonal at a time."""
    u = q.shape[-2]
    out = q.new_zeros(*q.shape[:-1], u)  # (..., u_t, u_s)
    for j in range(u):
        t, s = slice(j, u), slice(0, u - j)
        out.diagonal(-j, -2, -1).copy_((q[..., t, :] * k[..., s, :] * (G[..., t, :] - G[..., s, :]).exp()).sum(-1))
    return out


def gla_step(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """One decoding step. Shape: q, k (b, h, dk), v (b, h, dv), g (b, h, dk) or (b, h),
    state (b, h, dk, dv) -> output (b, h, dv), the next state."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    decay = g.exp()[..., None] if g.dim() == 3 else g.exp()[..., None, None]  # (b, h, dk or 1, 1)
    state = decay * state + k[..., :, None] * v[..., None, :]  # (b, h, dk, dv)
    return (q[..., None, :] * scale @ state).squeeze(-2), state


def gla_bidirectional(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    scale: float | None = None,
    chunk: int = 64,
    sub_chunk: int = 16,
    mask: Tensor | None = None,
    g_backward: Tensor | None = None,
) -> Tensor:
    """The forward scan (s <= t) plus the backward one (s > t), bidirectional.py's construction.

    The pair (t, s > t) decays by the gates strictly between them: exp(g_{t+1} + ... + g_{s-1}),
    with `g_backward` in place of g when given (a direction's own gates, as Hydra's dt).
    Shape: as `gla_chunked`'s, -> (b, h, n, dv).
    """
    scan = lambda q_, k_, v_, g_: gla_chunked(q_, k_, v_, g_, scale, chunk, sub_chunk)[0]
    k, g = _masked(k, g, mask)
    g_backward = g if g_backward is None else _masked(k, g_backward, mask)[1]
    return scan(q, k, v, g) + backward_scan(scan, q, k, v, g_backward)


# -- cost: forward FLOPs (multiply-adds, as the attention ops count them), activations, decode state
def gla_flops(n: int, heads: int, dk: int, dv: int, chunk: int = 64, sub_chunk: int = 16, per_dim: bool = True) -> int:
    """FLOPs of `gla_chunked` for one sequence: its matmuls, and with per-dim gates (g of shape
    (b, h, n, dk); else (b, h, n)) the within-sub-chunk products."""
    if not per_dim:
        return scalar_decay_flops(n, heads, dk, dv, chunk)
    c = chunk_size(n, chunk, sub_chunk)
    u = min(sub_chunk, c)
    m, s = -(-n // c), c // u
    across = 2 * s * u * (s * u) * dk  # each sub-chunk's queries against the chunk's keys
    within = s * u * (u + 1) * dk  # the sub-chunks' own scores: a multiply-add per pair s <= t and key dim
    per_chunk = across + within + 2 * c * c * dv + 2 * c * dk * dv * 2  # scores @ v; state write, read
    return heads * m * per_chunk


def gla_activation_elements(
    n: int, heads: int, dk: int, dv: int, chunk: int = 64, sub_chunk: int = 16, per_dim: bool = True
) -> int:
    """Elements `gla_chunked` keeps for backward for one sequence (counted against autograd's saved
    tensors in the tests), beside its inputs."""
    if not per_dim:
        return scalar_decay_activations(n, heads, dk, dv, chunk)
    c = chunk_size(n, chunk, sub_chunk)
    s, m = c // min(sub_chunk, c), -(-n // c)
    padded = m * c
    per_head = (
        padded * (2 * s * dk + c)  # the keys decayed to each later sub-chunk's start (and their copy), scores
        + padded * (8 if m > 1 else 7) * dk  # cumulative decays, the decayed queries and keys, sub-chunk inputs
        + 2 * m * dk * dv  # the state before each chunk (and their stack)
        + m * dk  # each chunk's decay
    )
    return heads * (per_head + padding_elements(n, padded, dk, dv)) + s * s  # + the (s, s) block diagonal


def gla_step_flops(heads: int, dk: int, dv: int) -> int:
    """Matrix products of one decoding step: the query against the (dk, dv) state."""
    return heads * 2 * dk * dv


def gla_state_bytes(heads: int, dk: int, dv: int, bytes_per_element: int = 4) -> int:
    """Decoding state of one sequence: the (h, dk, dv) matrix, whatever the context length."""
    return heads * dk * dv * bytes_per_element
