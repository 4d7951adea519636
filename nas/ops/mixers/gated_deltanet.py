"""The gated delta rule (Gated DeltaNet, Yang et al. 2025, https://arxiv.org/abs/2412.06464).

S_t = exp(g_t) S_{t-1} + k_t v'_t^T with v'_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t), o_t = S_t^T q_t
scale: the state decays by exp(g_t) <= 1 (one log decay per head and position) and then replaces
what it holds for key k_t by v_t, at rate beta_t in (0, 1). Keys are expected L2-normalised (the
layer's qk-norm), which keeps the update a contraction.

Training runs the chunked WY/UT form (Yang et al. 2024, "Parallelizing Linear Transformers with the
Delta Rule over Sequence Length", https://arxiv.org/abs/2406.06484, sec. 3; gated in the 2025 paper
sec. 3.3): within a chunk the corrected values V' solve a unit lower-triangular system
(I + A) V' = beta V - (beta K exp(G)) S_0, so V' = U - W S_0 with U, W from one triangular solve
(the UT transform); only S passes between chunks. Decoding runs `gated_delta_step` on a
(b, h, dk, dv) state. The bidirectional form is bidirectional.py's.
# b batch, h heads, n sequence, m chunks, c chunk, dk key dim, dv value dim
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.mixers.bidirectional import backward_scan
from nas.ops.mixers.chunks import causal_decay, chunk_size, from_chunks, padding_elements, to_chunks


def gated_delta_gates(a: Tensor, b: Tensor, A_log: Tensor, dt_bias: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's gates from per-head projections a, b (b, h, n): the log decay
    g = -exp(A_log) softplus(a + dt_bias) (Mamba-2's), and the write rate beta = sigmoid(b).
    A_log, dt_bias: (h,)."""
    g = -A_log.exp()[:, None] * F.softplus(a + dt_bias[:, None])
    return g, torch.sigmoid(b)


def _masked(k: Tensor, g: Tensor, beta: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """A padded position writes nothing and decays nothing: as if it were not there."""
    if mask is None:
        return k, g, beta
    keep = mask[:, None, :].to(k.dtype)  # (b, 1, n)
    return k * keep[..., None], g * keep, beta * keep


def gated_delta_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    chunk: int = 64,
    state: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The causal form, chunked (WY/UT).

    Args:
        q, k: (b, h, n, dk), k L2-normalised; v: (b, h, n, dv).
        g: (b, h, n) log decays (<= 0); beta: (b, h, n) write rates in (0, 1).
        scale: on the queries; default dk^-0.5.
        chunk: positions per chunk.
        state: (b, h, dk, dv) before position 0, or None for zeros.
        mask: (b, n) bool, True = real token; padded positions neither write nor decay.

    Returns:
        (b, h, n, dv) outputs and the (b, h, dk, dv) state after the last position.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k, g, beta = _masked(k, g, beta, mask)
    b, h, n, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size(n, chunk)
    q, k, v = (to_chunks(x, c) for x in (q * scale, k, v))  # (b, h, m, c, .)
    G, beta = to_chunks(g, c).cumsum(-1), to_chunks(beta, c)  # (b, h, m, c)
    decay = causal_decay(G)  # (b, h, m, c, c)
    kb = k * beta[..., None]
    strict = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    system = torch.where(strict, kb @ k.transpose(-1, -2) * decay, 0.0)  # (b, h, m, c, c): A
    system = system + torch.eye(c, dtype=q.dtype, device=q.device)  # I + A, unit lower-triangular
    rhs = torch.cat([v * beta[..., None], kb * G.exp()[..., None]], dim=-1)  # (b, h, m, c, dv + dk)
    U, W = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True).split([dv, dk], -1)

    scores = q @ k.transpose(-1, -2) * decay  # (b, h, m, c, c), s <= t
    q_decayed = q * G.exp()[..., None]  # (b, h, m, c, dk)
    k_to_end = k * (G[..., -1:] - G).exp()[..., None]  # (b, h, m, c, dk)
    chunk_decay = G[..., -1].exp()[..., None, None]  # (b, h, m, 1, 1)
    if state is None:
        state = q.new_zeros(b, h, dk, dv)
    out = []
    # The corrected values depend on the state: one chunk at a time. unbind, not indexing: the
    # backward of each index would fill a zero tensor of the whole length, O(n^2 / c) in all.
    per_chunk = (x.unbind(2) for x in (U, W, q_decayed, scores, k_to_end.transpose(-1, -2), chunk_decay))
    for u, w, q_j, scores_j, k_j, decay_j in zip(*per_chunk):
        values = u - w @ state  # (b, h, c, dv): V'
        out.append(q_j @ state + scores_j @ values)  # (b, h, c, dv)
        state = decay_j * state + k_j @ values  # (b, h, dk, dv)
    return from_chunks(torch.stack(out, dim=2), n), state


def gated_delta_step(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """One decoding step. Shape: q, k (b, h, dk), v (b, h, dv), g, beta (b, h), state (b, h, dk, dv)
    -> output (b, h, dv), the next state."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    state = g.exp()[..., None, None] * state  # (b, h, dk, dv)
    correction = v - (k[..., None, :] @ state).squeeze(-2)  # (b, h, dv): v_t minus what S holds for k_t
    state = state + k[..., :, None] * (beta[..., None] * correction)[..., None, :]
    return (q[..., None, :] * scale @ state).squeeze(-2), state


def gated_delta_bidirectional(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    chunk: int = 64,
    mask: Tensor | None = None,
    g_backward: Tensor | None = None,
) -> Tensor:
    """The forward scan plus the backward scan whose query at t reads the delta-rule memory of
    positions > t (bidirectional.py), with `g_backward` as the backward scan's decays when given.
    Shape: as `gated_delta_chunked`'s, -> (b, h, n, dv)."""
    scan = lambda q_, k_, v_, g_, beta_: gated_delta_chunked(q_, k_, v_, g_, beta_, scale, chunk)[0]
    k, g, beta = _masked(k, g, beta, mask)
    g_backward = g if g_backward is None else _masked(k, g_backward, beta, mask)[1]
    return scan(q, k, v, g, beta) + backward_scan(scan, q, k, v, g_backward, beta)


# -- cost: forward FLOPs (matmuls and the triangular solve), activations, decode state
def gated_delta_flops(n: int, heads: int, dk: int, dv: int, chunk: int = 64) -> int:
    """FLOPs of `gated_delta_chunked` for one sequence: its matmuls, and the unit lower-triangular
    solve counted as c (c - 1) multiply-adds per right-hand column."""
    c = chunk_size(n, chunk)
    m = -(-n // c)
    per_chunk = (
        2 * c * c * dk * 2  # k_beta k^T and q k^T
        + c * (c - 1) * (dv + dk)  # the solve for U and W
        + 2 * c * dk * dv * 3  # W S, q S, the state write
        + 2 * c * c * dv  # scores @ V'
    )
    return heads * m * per_chunk


def gated_delta_activation_elements(n: int, heads: int, dk: int, dv: int, chunk: int = 64) -> int:
    """Elements `gated_delta_chunked` keeps for backward for one sequence, beside its inputs (the
    tests count them against autograd's saved tensors)."""
    c = chunk_size(n, chunk)
    m = -(-n // c)
    padded = m * c
    per_head = (
        5 * padded * c  # the decay matrix, k_beta k^T, I + A, q k^T, the scores
        + padded * ((5 if m > 1 else 4) * dk + 2 * dv)  # U and W, decayed queries (read against a state) and keys, V'
        + 3 * padded  # cumulative decays, beta
        + m * dk * dv  # the state before each chunk
        + m
    )
    return heads * (per_head + padding_elements(n, padded, dk + 1, dv))  # + 1: beta's copy


def gated_delta_step_flops(heads: int, dk: int, dv: int) -> int:
    """Matrix products of one decoding step: the key and the query against the (dk, dv) state."""
    return heads * 2 * 2 * dk * dv


def gated_delta_state_bytes(heads: int, dk: int, dv: int, bytes_per_element: int = 4) -> int:
    """Decoding state of one sequence: the (h, dk, dv) matrix, whatever the context length."""
    return heads * dk * dv * bytes_per_element
