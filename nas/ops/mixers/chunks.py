"""The chunkwise-parallel form shared by the linear-recurrent mixers (GLA, Gated DeltaNet, Mamba-2's SSD).

A recurrence S_t = decay_t * S_{t-1} + k_t v_t^T, o_t = S_t^T q_t is cut into chunks of c positions:
within a chunk the outputs are a masked (c, c) product, across chunks only the (dk, dv) state passes,
so the work is matmuls and the memory linear in n (Yang et al. 2024, https://arxiv.org/abs/2312.06635,
sec. 3-4; Dao and Gu 2024, https://arxiv.org/abs/2405.21060, sec. 6, "ssd_minimal").
Gates are log decays (<= 0); cumulative sums G of them within a chunk give every decay between two
positions as exp(G_t - G_s), which is never above 1 for s <= t.
# b batch, h heads, n sequence, m chunks, c chunk size, dk key dim, dv value dim
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def chunk_size(n: int, chunk: int, multiple: int = 1) -> int:
    """The chunk used for length n: `chunk`, or n rounded up to `multiple` when n is shorter (so a
    short sequence is not padded to a whole chunk)."""
    if chunk < 1 or chunk % multiple:
        raise ValueError(f"chunk must be a positive multiple of {multiple}, got {chunk}")
    return min(chunk, -(-n // multiple) * multiple)


def to_chunks(x: Tensor, c: int) -> Tensor:
    """(b, h, n, ...) -> (b, h, m, c, ...), zero-padded at the end to m * c positions.

    A zero gate is no decay and a zero key writes nothing, so padding leaves the state as it was.
    """
    b, h, n = x.shape[:3]
    pad = -n % c
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
    return x.reshape(b, h, -1, c, *x.shape[3:])


def from_chunks(x: Tensor, n: int) -> Tensor:
    """(b, h, m, c, ...) -> (b, h, n, ...), the padding cut off."""
    b, h, m, c = x.shape[:4]
    return x.reshape(b, h, m * c, *x.shape[4:])[:, :, :n]


def causal_decay(G: Tensor) -> Tensor:
    """(b, h, m, c) cumulative log decays -> (b, h, m, c, c): exp(G_t - G_s) for s <= t, else 0."""
    c = G.shape[-1]
    seen = torch.ones(c, c, dtype=torch.bool, device=G.device).tril()
    # -inf before exp (not a mask after it): the upper triangle's positive exponents never overflow
    return torch.where(seen, G[..., :, None] - G[..., None, :], -torch.inf).exp()


def inter_chunk(q: Tensor, k: Tensor, v: Tensor, decay: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
    """The outputs' share from earlier chunks, and the state after the last chunk.

    Args:
        q: (b, h, m, c, dk) queries times their decay since the chunk's start.
        k: (b, h, m, c, dk) keys times their decay to the chunk's end.
        v: (b, h, m, c, dv) values.
        decay: (b, h, m, dk) or (b, h, m, 1), the decay over each whole chunk.
        state: (b, h, dk, dv) before the first chunk, or None for zeros.

    Returns:
        (b, h, m, c, dv) outputs and the (b, h, dk, dv) final state.
    """
    b, h, m, c, dk = k.shape
    local = k.transpose(-1, -2) @ v  # (b, h, m, dk, dv): what each chunk writes, at its end
    if state is None:
        state = local.new_zeros(b, h, dk, v.shape[-1])
    before = []
    # m = n / c steps of a (dk, dv) update: the only sequential part. unbind, not indexing: the
    # backward of each index would fill a zero tensor of the whole length, O(n^2 / c) in all.
    for chunk_decay, written in zip(decay[..., None].unbind(2), local.unbind(2)):
        before.append(state)
        state = chunk_decay * state + written  # (b, h, dk, dv)
    return q @ torch.stack(before, dim=2), state  # (b, h, m, c, dv), (b, h, dk, dv)


def scalar_decay_chunked(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, chunk: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """o_t = sum_{s <= t} exp(g_{s+1} + ... + g_t) (q_t . k_s) v_s plus the initial state's share,
    with one log decay per head and position (RetNet, simple GLA, Mamba-2's SSD): the masked
    (c, c) decay matrix of a chunk is exact, so no sub-chunks are needed.

    Shape: q, k (b, h, n, dk), v (b, h, n, dv), g (b, h, n) -> (b, h, n, dv), state (b, h, dk, dv).
    """
    n = q.shape[2]
    c = chunk_size(n, chunk)
    q, k, v = (to_chunks(x, c) for x in (q, k, v))  # (b, h, m, c, .)
    G = to_chunks(g, c).cumsum(-1)  # (b, h, m, c)
    intra = (q @ k.transpose(-1, -2) * causal_decay(G)) @ v  # (b, h, m, c, dv)
    last = G[..., -1:]  # (b, h, m, 1)
    inter, state = inter_chunk(q * G.exp()[..., None], k * (last - G).exp()[..., None], v, last.exp(), state)
    return from_chunks(intra + inter, n), state


# -- cost of the scalar-decay form: forward matmul FLOPs and the elements kept for backward
def scalar_decay_flops(n: int, heads: int, dk: int, dv: int, chunk: int) -> int:
    """Matmul FLOPs of `scalar_decay_chunked` for one sequence."""
    c = chunk_size(n, chunk)
    m = -(-n // c)
    return heads * m * (2 * c * c * dk + 2 * c * c * dv + 2 * c * dk * dv * 2)  # q k^T, @ v, state write, read


def padding_elements(n: int, padded: int, dk: int, dv: int) -> int:
    """Zero-padded copies of the keys and values when n is no multiple of the chunk."""
    return padded * (dk + dv) if padded != n else 0


def scalar_decay_activations(n: int, heads: int, dk: int, dv: int, chunk: int) -> int:
    """Elements `scalar_decay_chunked` keeps for backward for one sequence, beside its inputs (the
    tests count them against autograd's saved tensors)."""
    c = chunk_size(n, chunk)
    m = -(-n // c)
    padded = m * c
    per_head = (
        3 * padded * c  # q k^T, the decay matrix, their product
        + (3 if m > 1 else 2) * padded * dk  # the queries, decayed queries (read against a state) and keys
        + 2 * padded  # cumulative decays
        + 2 * m * dk * dv  # the state before each chunk (and their stack)
        + m
    )
    return heads * (per_head + padding_elements(n, padded, dk, dv))
