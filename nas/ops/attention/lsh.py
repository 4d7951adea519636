"""Reformer LSH attention (Kitaev et al. 2020, https://arxiv.org/abs/2001.04451).

Queries and keys share one projection. Angular LSH puts tokens in buckets; sorted by bucket, the
sequence is cut into chunks and each query attends to the keys of its chunk and of the chunks
before and after it (the bidirectional form of Reformer's look-one-back), only those of its own
bucket unless `attend_across_buckets`. Several hash rounds are combined by their softmax
normalizers.
# b batch, h heads, r hash rounds, n sequence, N padded sequence, d head dim,
# s chunk (= bucket) size, m = b h r N sorted rows of all rounds
"""
import dataclasses

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION


@dataclasses.dataclass(frozen=True)
class LSHConfig:
    bucket_size: int = 64  # also the chunk length: a query scores at most 3 * bucket_size keys
    n_hashes: int = 1  # hash rounds: more rounds miss fewer neighbours, at r times the cost
    n_buckets: int | None = None  # None: max_len // bucket_size, made even; 1: a single bucket
    # True (reformer-pytorch's default): a query also sees the other buckets' keys that sorting
    # put in its three chunks; False: only keys of its own bucket (the paper's strict form).
    attend_across_buckets: bool = True

    def __post_init__(self):
        if self.bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {self.bucket_size}")
        if self.n_hashes < 1:
            raise ValueError(f"n_hashes must be >= 1, got {self.n_hashes}")
        if self.n_buckets is not None and not (self.n_buckets == 1 or
                                               self.n_buckets >= 2 and self.n_buckets % 2 == 0):
            raise ValueError(f"n_buckets must be 1 or even, got {self.n_buckets}")


def windows(x: Tensor, s: int, fill: float) -> Tensor:
    """(m, ...) rows cut in chunks of s -> (m / s, ..., 3s): the chunks before, at and after each.

    A chunk of `fill` at each end gives the end chunks no neighbour there. unfold returns
    overlapping views, so no key or value is copied.
    """
    x = F.pad(x, (0, 0) * (x.dim() - 1) + (s, s), value=fill)  # (s + m + s, ...)
    return x.unfold(0, 3 * s, s)  # (m / s, ..., 3s)


@torch.no_grad()
def chunk_bias(buckets: Tensor, s: int, dtype: torch.dtype, group: int) -> Tensor:
    """(m,) sorted bucket ids -> (m/s, s, 3s) additive scores: 0 where a chunk's query may see a
    key of its window, the dtype's min elsewhere. A query sees a key when both ids agree after
    integer division by `group` (1: same bucket; n_buckets + 1: same hash round, any bucket);
    the id n_buckets marks padding, which nothing sees."""
    lowest = torch.finfo(dtype).min
    keys = windows(buckets, s, -1)  # (m/s, 3s); -1 agrees with no id
    seen = (buckets.view(-1, s, 1) // group == keys[:, None] // group)  # (m/s, s, 3s)
    if group > 1:
        seen &= (keys % group != group - 1)[:, None]  # padding's sentinel bucket
    bias = torch.zeros(seen.shape, dtype=dtype, device=buckets.device)
    bias.masked_fill_(~seen, lowest)
    # Reformer's self score: far below any real score, far above `lowest`, so that a query
    # attends itself only when its window offers no other key. Query i is key s + i.
    bias.diagonal(s, 1, 2).fill_(max(-1e5, lowest / 2))
    return bias


def attend_chunks(q: Tensor, v: Tensor, buckets: Tensor, s: int, group: int) -> tuple[Tensor, Tensor]:
    """Sorted (m, d) queries and values and (m,) bucket ids, in chunks of s -> (m, d) outputs
    and (m,) logsumexps: each query sees the keys of its and its neighbour chunks that
    `chunk_bias` allows."""
    m, d = q.shape
    # Unit keys with the 1/sqrt(d) scale; an eps the dtype can hold keeps padding's zeros at 0.
    k = F.normalize(q, dim=-1, eps=torch.finfo(q.dtype).tiny) * d ** -0.5  # (m, d)
    scores = torch.baddbmm(chunk_bias(buckets, s, q.dtype, group), q.view(-1, s, d),
                           windows(k, s, 0.0))  # (m/s, s, 3s)
    p = scores.softmax(-1)  # (m/s, s, 3s)
    # logsumexp = max - log p(max): exact, well-conditioned as p(max) >= 1/3s, and it keeps
    # only indices for backward where logsumexp would keep all the scores.
    top, at = scores.max(-1)  # (m/s, s)
    lse = top - p.gather(-1, at[..., None]).squeeze(-1).log()  # (m/s, s)
    out = p @ windows(v, s, 0.0).transpose(1, 2)  # (m/s, s, d)
    return out.view(m, d), lse.view(m)


@ATTENTION.register("lsh")
class LSHAttention(AttentionCore):
    Config = LSHConfig
    inputs = ("q", "v")  # keys are the queries normalized to unit length

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None):
        super().__init__(head_dim, max_heads, max_len, config)
        cfg = self.config
        buckets = cfg.n_buckets or max(2, max_len // cfg.bucket_size)
        self.n_buckets = buckets + buckets % 2 if buckets > 1 else 1
        # Shared by all heads; a buffer so that an extracted subnet hashes exactly as the supernet.
        self.register_buffer("rotations", torch.randn(cfg.n_hashes, head_dim, self.n_buckets // 2))

    def hash(self, x: Tensor) -> Tensor:
        """Angular LSH, (b, h, n, d) -> (b, h, r, n) bucket ids: argmax over [xR, -xR]."""
        b, h, n, d = x.shape
        r, half = self.config.n_hashes, self.n_buckets // 2
        if self.n_buckets == 1:
            return torch.zeros(b, h, r, n, dtype=torch.long, device=x.device)
        rot = self.rotations.to(x.dtype).transpose(0, 1).reshape(d, r * half)  # (d, r buckets/2)
        rotated = (x @ rot).view(b, h, n, r, half)  # (b, h, n, r, buckets/2)
        top, top_at = rotated.max(-1)  # (b, h, n, r); max and min spare building [xR, -xR]
        low, low_at = rotated.min(-1)
        buckets = torch.where(top >= -low, top_at, low_at + half)  # (b, h, n, r)
        return buckets.transpose(2, 3).contiguous()  # (b, h, r, n)

    def forward(self, q: Tensor, k: Tensor | None, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, h, n, d = q.shape
        r, s = self.config.n_hashes, self.config.bucket_size
        length = -(-n // s) * s  # N: whole chunks, padded, never truncated

        real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
        real = F.pad(real, (0, length - n), value=False)  # (b, N)
        q = F.pad(q, (0, 0, 0, length - n))  # (b, h, N, d)
        v = F.pad(v, (0, 0, 0, length - n))  # (b, h, N, d)

        with torch.no_grad():
            buckets = self.hash(q)  # (b, h, r, N)
            # Padding goes to a sentinel bucket after the real ones, so the real tokens sort
            # the same with or without it; the stable sort keeps position order within a bucket.
            buckets.masked_fill_(~real[:, None, None], self.n_buckets)
            buckets, order = buckets.sort(dim=-1, stable=True)  # (b, h, r, N)
            # Ids distinct per (batch, head, round): all rounds are then chunked as one long
            # sequence, and an end chunk never sees into the next round or head.
            rounds = torch.arange(b * h * r, device=q.device).view(b, h, r, 1)
            buckets = (buckets + rounds * (self.n_buckets + 1)).view(-1)  # (b h r N)

        index = order.view(b, h, r * length, 1).expand(-1, -1, -1, d)
        sq = q.gather(2, index).view(-1, d)  # (b h r N, d), sorted within each round
        sv = v.gather(2, index).view(-1, d)  # (b h r N, d)
        group = self.n_buckets + 1 if self.config.attend_across_buckets else 1
        out, lse = attend_chunks(sq, sv, buckets, s, group)  # (b h r N, d), (b h r N)
        # Back to position order with the inverse permutation of `order`.
        positions = torch.arange(length, device=q.device).expand_as(order)
        unsort = torch.empty_like(order).scatter_(-1, order, positions)  # (b, h, r, N)
        out = out.view(b, h, r, length, d).gather(3, unsort[..., None].expand(-1, -1, -1, -1, d))
        if r == 1:
            return out[:, :, 0, :n]  # (b, h, n, d)
        # Rounds are weighed by their normalizers: a softmax over the union of their keys.
        lse = lse.view(b, h, r, length).gather(3, unsort)  # (b, h, r, N)
        return (out * lse.softmax(dim=2)[..., None]).sum(2)[:, :, :n]  # (b, h, n, d)

    def flops(self, n: int, heads: int) -> int:
        s, r, d = self.config.bucket_size, self.config.n_hashes, self.head_dim
        length = -(-n // s) * s
        hashing = 2 * length * d * (self.n_buckets // 2)
        attention = 2 * 2 * length * 3 * s * d  # q k^T and p v, 3s keys per query
        combining = 2 * length * d if r > 1 else 0
        return heads * r * (hashing + attention + combining)

    def activation_elements(self, n: int, heads: int) -> int:
        s, r, d = self.config.bucket_size, self.config.n_hashes, self.head_dim
        length = -(-n // s) * s
        return heads * r * length * (3 * s + 4 * d)  # p; sorted q, k, v; the round's output
