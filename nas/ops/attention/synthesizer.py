"""Synthesizer: attention weights synthesized without query-key dot products
(Tay et al. 2020, https://arxiv.org/abs/2005.00743), in its dense and random variants.

Dense scores relu(q W1 + b1) W2 and factorized random scores A B^T are both dot products of an
(n, .) by an (n, .) matrix, so they run through the fused attention kernel and never hold n x n.
The causal form masks the scores above the diagonal (the fused kernel's `is_causal`); its step
form keeps a cache of the values (max_len long): the scores of a position need no other token.
# b batch, h heads, n sequence, d head dim, r rank of the random scores, L cache length
"""

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore, causal_bias, key_bias, slots_upto, write_slot
from nas.ops.attention.registry import ATTENTION

VARIANTS = ("dense", "random")


@dataclasses.dataclass(frozen=True)
class SynthesizerConfig:
    variant: str = "dense"  # "dense": scores from each token alone; "random": learned, input-free
    rank: int | None = 32  # random only: scores A B^T of this rank; None learns full (n, n) scores

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got '{self.variant}'")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1 or None, got {self.rank}")


@ATTENTION.register("synthesizer")
class SynthesizerAttention(AttentionCore):
    """One class per variant, each with fixed `inputs` and `per_head`: building the registered
    class builds the variant its config names (`DenseSynthesizer`, `RandomSynthesizer` or
    `FactorizedRandomSynthesizer`)."""

    Config = SynthesizerConfig

    def __new__(cls, *args, **kwargs):
        if cls is not SynthesizerAttention:  # a variant, or a copy being unpickled
            return super().__new__(cls)
        config = kwargs.get("config", args[3] if len(args) > 3 else None) or SynthesizerConfig()
        if config.variant == "dense":
            return super().__new__(DenseSynthesizer)
        return super().__new__(RandomSynthesizer if config.rank is None else FactorizedRandomSynthesizer)

    def forward(self, q: Tensor | None, k: None, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, h, n, d = v.shape
        if self.config.variant == "dense":
            hidden = F.relu(q @ self.w1[:h] + self.b1[:h, None, :])  # (b, h, n, d)
            keys = self.w2[:h, :n].expand(b, -1, -1, -1)  # (b, h, n, d)
        elif self.config.rank is None:
            scores = self.r[:h, :n, :n]  # (h, n, n): the parameter itself is quadratic anyway
            if self.causal:
                return (scores + causal_bias(n, mask, v.dtype, v.device)).softmax(dim=-1) @ v  # (b, h, n, d)
            if mask is not None:
                scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(v.dtype).min)
            return scores.softmax(dim=-1) @ v  # (b, h, n, d)
        else:
            # The fused kernel needs one width for queries, keys and values: zero columns pad
            # the factors (A B^T is unchanged) or the values (cut off the output again).
            width = max(self.config.rank, d)
            hidden = F.pad(self.a[:h, :n], (0, width - self.config.rank)).expand(b, -1, -1, -1)
            keys = F.pad(self.b[:h, :n], (0, width - self.config.rank)).expand(b, -1, -1, -1)
            v = F.pad(v, (0, width - d))  # (b, h, n, width), like hidden and keys
        # The paper applies no 1/sqrt(d) scaling to synthesized scores.
        if self.causal and mask is None:
            out = F.scaled_dot_product_attention(hidden, keys, v, is_causal=True, scale=1.0)
        else:
            bias = causal_bias(n, mask, v.dtype, v.device) if self.causal else key_bias(mask, v.dtype)
            out = F.scaled_dot_product_attention(hidden, keys, v, attn_mask=bias, scale=1.0)
        return out[..., :d]  # (b, h, n, d)

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        return (torch.zeros(batch, heads, length, self.head_dim, device=device, dtype=dtype),)  # values (b, h, L, d)

    def step(self, q, k, v, state, position):
        values = write_slot(state[0], v, position)  # (b, h, L, d)
        h, length = values.shape[1], values.shape[2]
        seen = slots_upto(position, length)  # (L,)
        if self.config.variant == "dense":
            hidden = F.relu(q @ self.w1[:h] + self.b1[:h, None, :])  # (b, h, 1, d)
            keys = self.w2[:h, :length].expand(q.shape[0], -1, -1, -1)  # (b, h, L, d)
            out = F.scaled_dot_product_attention(hidden, keys, values, attn_mask=seen[None, None, None], scale=1.0)
            return out, (values,)  # (b, h, 1, d)
        if self.config.rank is None:
            scores = self.r[:h].index_select(1, position.view(1))[..., :length]  # (h, 1, L)
        else:
            scores = self.a[:h].index_select(1, position.view(1)) @ self.b[:h, :length].transpose(1, 2)  # (h, 1, L)
        scores = scores.masked_fill(~seen, torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1) @ values, (values,)  # (b, h, 1, d)

    def flops(self, n: int, heads: int) -> int:
        d, rank = self.head_dim, self.config.rank
        # causal: the fused kernel skips the blocks above the diagonal (the full random scores are
        # a plain softmax, which does not)
        pairs = n * (n + 1) // 2 if self.causal else n * n
        if self.config.variant == "dense":
            return 2 * heads * (n * d * d + 2 * pairs * d)  # q W1, then scores and p v
        if rank is None:
            return 2 * heads * n * n * d  # p v
        return 2 * 2 * heads * pairs * max(rank, d)  # A B^T and p v, both at the padded width

    def activation_elements(self, n: int, heads: int) -> int:
        hidden = n * self.head_dim if self.config.variant == "dense" else 0
        return heads * (n * n + hidden)  # the attention matrix (fused kernels keep less)

    def state_elements(self, n: int, heads: int) -> int:
        return heads * n * self.head_dim  # the cache of values

    def step_flops(self, n: int, heads: int) -> int:
        d, rank = self.head_dim, self.config.rank
        if self.config.variant == "dense":
            return 2 * heads * (d * d + 2 * n * d)  # q W1, then the scores and p v over n tokens
        scores = 0 if rank is None else 2 * n * rank  # A_t B^T
        return heads * (scores + 2 * n * d)  # and p v


class DenseSynthesizer(SynthesizerAttention):
    """Scores relu(q W1 + b1) W2: each query's row from that token alone."""

    inputs = ("q", "v")
    per_head = ("w1", "b1", "w2")

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        h, d = max_heads, head_dim
        # The paper's b2 is left out: a hidden unit with zero weights and positive bias
        # gives a row of W2 that acts as the same per-key bias.
        self.w1 = nn.Parameter(torch.randn(h, d, d) * d**-0.5)  # (h, d, d)
        self.b1 = nn.Parameter(torch.zeros(h, d))  # (h, d)
        # W2 is held transposed, a row per key position, so that its leading n rows are
        # the keys of the fused kernel as they are (it wants the last dim contiguous).
        self.w2 = nn.Parameter(torch.randn(h, max_len, d) * d**-0.5)  # (h, max_len, d)


class RandomSynthesizer(SynthesizerAttention):
    """Learned, input-free full (n, n) scores R per head: reads only the values."""

    inputs = ("v",)
    per_head = ("r",)

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        self.r = nn.Parameter(torch.randn(max_heads, max_len, max_len))  # (h, max_len, max_len)


class FactorizedRandomSynthesizer(SynthesizerAttention):
    """Learned, input-free scores A B^T of rank r per head: reads only the values."""

    inputs = ("v",)
    per_head = ("a", "b")

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        h, rank = max_heads, self.config.rank
        # std rank^-1/4 on both factors gives A B^T entries of unit variance, like full R.
        self.a = nn.Parameter(torch.randn(h, max_len, rank) * rank**-0.25)  # (h, max_len, r)
        self.b = nn.Parameter(torch.randn(h, max_len, rank) * rank**-0.25)  # (h, max_len, r)
