"""Reformer LSH attention (Kitaev et al. 2020, https://arxiv.org/abs/2001.04451).

Queries and keys share one projection. Angular LSH puts tokens in buckets; sorted by bucket, the
sequence is cut into chunks and each query attends to the keys of its chunk and of the chunks
before and after it (the bidirectional form of Reformer's look-one-back), only those of its own
bucket unless `attend_across_buckets`. Several hash rounds are combined by their softmax
normalizers.

The causal form is Reformer's causal masking inside buckets (sec. 2.1): a query sees the keys of
its own bucket at or before it, the s latest of them (a window of s sorted rows back, which the
chunk and the one before it hold). Counted back from the query rather than from the chunk's
start, and never across buckets, because where sorting puts a token depends on the buckets of
the tokens after it: what a query sees then depends on the past alone. The step form keeps a
cache of every key, value and bucket id (max_len long) and picks the same keys from it.
# b batch, h heads, r hash rounds, n sequence, N padded sequence, d head dim, L cache length,
# s chunk (= bucket) size, m = b h r N sorted rows of all rounds
"""

import dataclasses

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore, write_slot
from nas.ops.attention.registry import ATTENTION


@dataclasses.dataclass(frozen=True)
class LSHConfig:
    bucket_size: int = 64  # also the chunk length: a query scores at most 3 * bucket_size keys
    n_hashes: int = 1  # hash rounds: more rounds miss fewer neighbours, at r times the cost
    n_buckets: int | None = None  # None: max_len // bucket_size, made even; 1: a single bucket
    # True (reformer-pytorch's default): a query also sees the other buckets' keys that sorting
    # put in its three chunks; False: only keys of its own bucket (the paper's strict form).
    # The causal form always keeps to the bucket.
    attend_across_buckets: bool = True

    def __post_init__(self):
        if self.bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1, got {self.bucket_size}")
        if self.n_hashes < 1:
            raise ValueError(f"n_hashes must be >= 1, got {self.n_hashes}")
        if self.n_buckets is not None and not (self.n_buckets == 1 or self.n_buckets >= 2 and self.n_buckets % 2 == 0):
            raise ValueError(f"n_buckets must be 1 or even, got {self.n_buckets}")


def windows(x: Tensor, s: int, fill: float, spans: int = 3) -> Tensor:
    """(m, ...) rows cut in chunks of s -> (m / s, ..., spans s): the chunks before, at and (spans
    3) after each.

    A chunk of `fill` at each end gives the end chunks no neighbour there. unfold returns
    overlapping views, so no key or value is copied.
    """
    x = F.pad(x, (0, 0) * (x.dim() - 1) + (s, s * (spans - 2)), value=fill)  # (s + m + s, ...)
    return x.unfold(0, spans * s, s)  # (m / s, ..., spans s)


def row_windows(x: Tensor, s: int, spans: int = 3) -> Tensor:
    """`RowWindows` where a gradient is recorded; without one (inference, export) the same view
    by plain ops, which TorchScript can save where it cannot save a Python autograd Function."""
    if torch.is_grad_enabled() and x.requires_grad:
        return RowWindows.apply(x, s, spans)
    return _padded_windows(x, s, spans)


def _padded_windows(x: Tensor, s: int, spans: int = 3) -> Tensor:
    m, d = x.shape
    padded = F.pad(x, (0, 0, s, s * (spans - 2)))
    return padded.as_strided((m // s, spans * s, d), (s * d, d, 1))  # (m/s, spans s, d)


def permute_rows(x: Tensor, index: Tensor, inverse: Tensor, copies: int) -> Tensor:
    """`PermuteRows` where a gradient is recorded; a plain index_select otherwise (see `row_windows`)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return PermuteRows.apply(x, index, inverse, copies)
    return x.index_select(0, index)


class RowWindows(torch.autograd.Function):
    """(m, d) rows -> (m/s, spans s, d): chunk i's rows after those of chunk i-1 and (spans 3)
    before those of i+1 (zeros beyond the ends), as a view of one padded copy. Its backward adds
    shifted slices of the gradient, where unfold's generic backward is an order of magnitude slower."""

    @staticmethod
    def forward(ctx, x: Tensor, s: int, spans: int = 3) -> Tensor:
        ctx.s, ctx.spans = s, spans
        return _padded_windows(x, s, spans)  # (m/s, spans s, d): a view of one padded, contiguous copy

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        s = ctx.s
        c, _, d = grad.shape
        grad = grad.reshape(c, ctx.spans, s, d)  # (m/s, spans, s, d): from the chunk before, own, after
        out = grad[:, 1].clone(memory_format=torch.contiguous_format)  # (m/s, s, d)
        if ctx.spans == 3:
            out[1:] += grad[:-1, 2]  # chunk i is the "after" of chunk i-1
        out[:-1] += grad[1:, 0]  # and the "before" of chunk i+1
        return out.view(c * s, d), *(None,) * (len(ctx.needs_input_grad) - 1)  # none for s (and spans)


class PermuteRows(torch.autograd.Function):
    """out = x[index] for an index that takes each row of x `copies` times (once per hash round
    on the way in, once on the way back). `inverse` lists, for each row of x, the places of its
    `copies` copies in out, side by side. The backward is then a gather and a sum too, where
    index_select's own backward is a slow scatter-add."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, inverse: Tensor, copies: int) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.copies = copies
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (inverse,) = ctx.saved_tensors
        grad = grad.index_select(0, inverse)  # (rows copies, d)
        if ctx.copies > 1:
            grad = grad.view(-1, ctx.copies, grad.shape[-1]).sum(1)  # (rows, d)
        return grad, None, None, None


def masked_exp(scores: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
    """(m/s, s, 3s) scores of chunk queries against their windows, in place -> e = exp(score -
    top) and the (m/s, s, 1) tops. A hidden key gets e = exp(lowest - top) = 0. Reformer's self
    score (query i of a chunk is key s + i of its window) is far below any real score and far
    above `lowest`, so that a query attends itself only when its window offers no other key.

    The masked scores are constants, written outside autograd: exp's backward, grad * e, already
    gives them no gradient. A hidden key has e = 0; the self score has e = 0 too, unless it is
    the query's only key, whose weight is 1 whatever its score. Where masked_fill_'s backward
    would copy and fill the whole score tensor twice.
    """
    s = scores.shape[1]
    constant = scores.detach()  # the same storage; the matmul that made it saved no output
    constant.masked_fill_(hidden, torch.finfo(scores.dtype).min)
    constant.diagonal(offset=s, dim1=1, dim2=2).fill_(max(-1e5, torch.finfo(scores.dtype).min / 2))
    top = constant.amax(-1, keepdim=True)  # (m/s, s, 1)
    return scores.sub_(top).exp_(), top  # in place: exp's backward needs only its output


@torch.no_grad()
def chunk_hidden(buckets: Tensor, s: int, group: int, causal: bool = False) -> Tensor:
    """(m,) sorted bucket ids -> (m/s, s or 1, 3s) bool: the keys of its window a chunk's query
    does not see (broadcast over the chunk's queries when they all see the same keys).

    A query sees a key when both ids agree after integer division by `group` (1: same bucket;
    n_buckets + 1: same hash round, any bucket); the id n_buckets marks padding, which nothing
    sees. Query i of a chunk is key s + i of its window.

    causal: windows of 2s (the chunk before and its own); a query sees the keys of its bucket
    0..s sorted rows back, i.e. keys i..s+i of its window (`group` must be 1).
    """
    if causal:
        keys = windows(buckets, s, -1, spans=2)  # (m/s, 2s)
        back = torch.arange(s, device=buckets.device)[:, None] + s - torch.arange(2 * s, device=buckets.device)
        band = (back >= 0) & (back <= s)  # (s, 2s): sorted rows between key and query
        return ~((buckets.view(-1, s, 1) == keys[:, None]) & band)  # (m/s, s, 2s)
    keys = windows(buckets, s, -1)  # (m/s, 3s); -1 agrees with no id
    if group == 1:
        return buckets.view(-1, s, 1) != keys[:, None]  # (m/s, s, 3s)
    # A round's length is whole chunks, so all queries of a chunk share their round: one row
    # of keys per chunk, broadcast over its queries.
    same = (keys // group == buckets[::s, None] // group) & (keys % group != group - 1)  # (m/s, 3s)
    return ~same[:, None, :]  # (m/s, 1, 3s)


def attend_chunks(
    q: Tensor, k: Tensor, v: Tensor, buckets: Tensor, s: int, group: int, causal: bool = False
) -> tuple[Tensor, Tensor]:
    """Sorted (m, d) queries, unit keys (with the 1/sqrt(d) scale) and values and (m,) bucket ids,
    in chunks of s -> (m, d+1) unnormalized outputs [e v, sum e] with e = exp(score - top) and
    the (m, 1) tops: each query sees the keys of its and its neighbour chunks (causal: the chunk
    before only) that `chunk_hidden` does not hide. All chunks of all heads and rounds are one
    batch of matmuls.

    Unnormalized outputs let rounds combine without a logsumexp: out = sum_r w_r num_r /
    sum_r w_r den_r with w_r = exp(top_r - max top), and the ones column of [v 1] makes the
    denominators in the same matmul as the numerators.
    """
    m, d = q.shape
    spans = 2 if causal else 3
    scores = q.view(-1, s, d) @ row_windows(k, s, spans).transpose(1, 2)  # (m/s, s, spans s)
    e, top = masked_exp(scores, chunk_hidden(buckets, s, group, causal))  # (m/s, s, spans s), (m/s, s, 1)
    v1 = F.pad(v, (0, 1), value=1.0)  # (m, d+1)
    out = e @ row_windows(v1, s, spans)  # (m/s, s, d+1); the top key has e = 1, so den >= 1
    return out.view(m, d + 1), top.view(m, 1)


@ATTENTION.register("lsh")
class LSHAttention(AttentionCore):
    Config = LSHConfig
    inputs = ("q", "v")  # keys are the queries normalized to unit length

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
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
        # fp32 even under bf16 autocast: rounding would tie and flip near-equal projections, so
        # the buckets (and the sort) would depend on the precision.
        with torch.autocast(x.device.type, enabled=False):
            rot = self.rotations.float().transpose(0, 1).reshape(d, r * half)  # (d, r buckets/2)
            # In (b, n, h) order: one matmul without a copy where x is split_heads' view.
            rotated = (x.transpose(1, 2).float() @ rot).view(b, n, h, r, half)  # (b, n, h, r, buckets/2)
        top, top_at = rotated.max(-1)  # (b, n, h, r); max and min spare building [xR, -xR]
        low, low_at = rotated.min(-1)
        buckets = torch.where(top >= -low, top_at, low_at + half)  # (b, n, h, r)
        return buckets.permute(0, 2, 3, 1).contiguous()  # (b, h, r, n)

    def forward(self, q: Tensor, k: Tensor | None, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, h, n, d = q.shape
        r, s = self.config.n_hashes, self.config.bucket_size
        length = -(-n // s) * s  # N: whole chunks, padded, never truncated
        if length > n:
            q, v = (
                F.pad(x.transpose(1, 2), (0, 0, 0, 0, 0, length - n)).transpose(1, 2) for x in (q, v)
            )  # (b, h, N, d), padded in (b, N, h, d) order like the rest

        with torch.no_grad():
            buckets = self.hash(q)  # (b, h, r, N)
            if mask is not None or length > n:
                # Padding goes to a sentinel bucket after the real ones, so the real tokens sort
                # the same with or without it.
                real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
                real = F.pad(real, (0, length - n), value=False)  # (b, N)
                buckets.masked_fill_(~real[:, None, None], self.n_buckets)
            # The stable sort keeps position order within a bucket.
            buckets, order = buckets.sort(dim=-1, stable=True)  # (b, h, r, N)
            # Ids distinct per (batch, head, round): all rounds are then chunked as one long
            # sequence, and an end chunk never sees into the next round or head.
            rounds = torch.arange(b * h * r, device=q.device).view(b, h, r, 1)
            buckets = (buckets + rounds * (self.n_buckets + 1)).view(-1)  # (b h r N)

            # Row indices between the tokens as the projections lay them out, (b N h, d) rows
            # (split_heads' view, so no copy on the way in or out), and the sorted rows of all
            # rounds, (b h r N, d): one index_select per tensor covers every batch, head and
            # round (a copy of whole rows, where gather with an expanded index goes element by
            # element).
            batch = torch.arange(b, device=q.device).view(b, 1, 1, 1)
            head = torch.arange(h, device=q.device).view(1, h, 1, 1)
            token_rows = (batch * length + order) * h + head  # (b, h, r, N): sorted row -> token row
            positions = torch.arange(length, device=q.device).expand_as(order)
            unsort = torch.empty_like(order).scatter_(-1, order, positions)  # (b, h, r, N)
            # Token and round -> sorted row, token-major: (b, N, h, r).
            sorted_rows = (unsort + rounds * length).permute(0, 3, 1, 2).contiguous().view(-1)
            # Sorted row -> row of the token-major (b N h r) output.
            out_rows = (token_rows * r + torch.arange(r, device=q.device).view(1, 1, r, 1)).view(-1)
            token_rows = token_rows.view(-1)

        # (b N h, d) rows: views where q and v are split_heads' views of the projections.
        q, v = (x.transpose(1, 2).reshape(-1, d) for x in (q, v))
        # Unit keys with the 1/sqrt(d) scale, normalized before sorting: once per token, not
        # once per round. An eps the dtype can hold keeps padding's zeros at 0.
        norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
        k = q * (d**-0.5 / norm)  # (b N h, d)
        sq, sk, sv = (
            permute_rows(x, token_rows, sorted_rows, r) for x in (q, k, v)
        )  # (b h r N, d) each, sorted within each round
        group = self.n_buckets + 1 if self.config.attend_across_buckets and not self.causal else 1
        out, top = attend_chunks(sq, sk, sv, buckets, s, group, self.causal)  # (b h r N, d+1), (b h r N, 1)
        out = permute_rows(out, sorted_rows, out_rows, 1)  # (b N h r, d+1): token order
        out = out.view(b, length, h, r, d + 1)[:, :n]  # (b, n, h, r, d+1)
        if r > 1:
            # Rounds are weighed by their normalizers: a softmax over the union of their keys.
            # The tops are constants that cancel; they only keep the exps in range.
            top = top.view(-1)[sorted_rows].view(b, length, h, r, 1)[:, :n]  # (b, n, h, r, 1)
            out = (out * (top - top.amax(3, keepdim=True)).exp()).sum(3)  # (b, n, h, d+1)
        else:
            out = out[:, :, :, 0]  # (b, n, h, d+1)
        # One reciprocal per row: its backward is cheaper than a division's on every element.
        return (out[..., :d] * out[..., d:].reciprocal()).transpose(1, 2)  # (b, h, n, d)

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        cache = torch.zeros(batch, heads, length, self.head_dim, device=device, dtype=dtype)  # (b, h, L, d)
        buckets = torch.zeros(batch, heads, length, self.config.n_hashes, dtype=torch.int32, device=device)
        return cache, cache.clone(), buckets  # unit keys, values, bucket ids (b, h, L, r) of every round

    def step(self, q, k, v, state, position):
        keys, values, buckets = state
        d, s = q.shape[-1], self.config.bucket_size
        hashed = self.hash(q).transpose(2, 3).to(torch.int32)  # (b, h, 1, r)
        norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
        keys = write_slot(keys, q * (d**-0.5 / norm), position)  # (b, h, L, d), as forward's unit keys
        values = write_slot(values, v, position)  # (b, h, L, d)
        buckets = write_slot(buckets, hashed, position)  # (b, h, L, r)
        # The keys of the query's bucket so far, and how many sorted rows each is back: the keys
        # of the bucket after it, up to the query.
        slot = torch.arange(keys.shape[2], device=q.device)[:, None]  # (L, 1)
        same = (buckets == hashed) & (slot <= position)  # (b, h, L, r)
        back = same.sum(2, keepdim=True) - same.cumsum(2)  # (b, h, L, r)
        scores = (keys @ q.transpose(-1, -2)).expand_as(same)  # (b, h, L, r)
        # As masked_exp: hidden keys at the lowest score, the query's own key far below any other.
        scores = scores.masked_fill(~(same & (back <= s)), torch.finfo(q.dtype).min)
        scores = scores.masked_fill(slot == position, max(-1e5, torch.finfo(q.dtype).min / 2))
        top = scores.amax(2, keepdim=True)  # (b, h, 1, r)
        e = (scores - top).exp()  # (b, h, L, r)
        out = e.transpose(-1, -2) @ F.pad(values, (0, 1), value=1.0)  # (b, h, r, d+1): [e v, sum e]
        out = (out * (top - top.amax(-1, keepdim=True)).transpose(-1, -2).exp()).sum(2, keepdim=True)  # (b, h, 1, d+1)
        return out[..., :d] * out[..., d:].reciprocal(), (keys, values, buckets)  # (b, h, 1, d)

    def flops(self, n: int, heads: int) -> int:
        s, r, d = self.config.bucket_size, self.config.n_hashes, self.head_dim
        length = -(-n // s) * s
        hashing = 2 * length * d * (self.n_buckets // 2)
        spans = 2 if self.causal else 3
        attention = 2 * length * spans * s * (2 * d + 1)  # q k^T and e [v 1], spans s keys per query
        combining = 2 * length * (d + 1) if r > 1 else 0
        return heads * r * (hashing + attention + combining)

    def activation_elements(self, n: int, heads: int) -> int:
        s, r, d = self.config.bucket_size, self.config.n_hashes, self.head_dim
        length = -(-n // s) * s
        spans = 2 if self.causal else 3
        return heads * r * length * (spans * s + 4 * d)  # p; sorted q, k, v; the round's output

    def state_elements(self, n: int, heads: int) -> int:
        return heads * n * (2 * self.head_dim + self.config.n_hashes)  # unit keys, values, bucket ids (int32)

    def step_flops(self, n: int, heads: int) -> int:
        r, d = self.config.n_hashes, self.head_dim
        hashing = 2 * d * r * (self.n_buckets // 2)
        return heads * (hashing + 2 * n * d + 2 * r * n * (d + 1))  # scores once, e [v 1] per round
