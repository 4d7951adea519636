"""Linformer: keys and values projected along the sequence to a fixed length k
(Wang et al. 2020, https://arxiv.org/abs/2006.04768). Cost is linear in n.
# b batch, h heads, n sequence, d head dim, k projected length
"""
import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION


@dataclasses.dataclass(frozen=True)
class LinformerConfig:
    k: int = 256  # projected length of keys and values

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@ATTENTION.register("linformer")
class LinformerAttention(AttentionCore):
    Config = LinformerConfig

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None):
        super().__init__(head_dim, max_heads, max_len, config)
        # E and F are shared across heads (the paper's headwise sharing); a length n < max_len
        # uses their first n columns. std 1/sqrt(max_len) keeps projected rows at the keys' scale.
        shape = (self.config.k, max_len)
        self.e = nn.Parameter(torch.randn(shape) * max_len ** -0.5)  # (k, max_len) for keys
        self.f = nn.Parameter(torch.randn(shape) * max_len ** -0.5)  # (k, max_len) for values

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, h, n, d = q.shape
        # All heads in one matmul: (k, n) @ (b, n, h d). The projections come sequence-major
        # (split_heads' view of (b, n, h d)), so this reshape is a view and the product is one
        # plain GEMM per batch row, instead of b h small ones over a strided copy.
        k, v = (x.transpose(1, 2).reshape(b, n, h * d) for x in (k, v))  # (b, n, h d)
        if mask is not None:
            # Zeroed padding adds nothing to the projections, so it is invisible downstream.
            padding = ~mask[:, :, None]  # (b, n, 1)
            k, v = k.masked_fill(padding, 0), v.masked_fill(padding, 0)
        k = (self.e[:, :n] @ k).view(b, -1, h, d).transpose(1, 2)  # (b, h, k, d)
        v = (self.f[:, :n] @ v).view(b, -1, h, d).transpose(1, 2)  # (b, h, k, d)
        return F.scaled_dot_product_attention(q, k, v)  # (b, h, n, d), fused over the k keys

    def flops(self, n: int, heads: int) -> int:
        k = self.config.k
        return 2 * 2 * heads * n * k * self.head_dim * 2  # E k and F v, then q k^T and p v

    def activation_elements(self, n: int, heads: int) -> int:
        return heads * (n * self.config.k + 2 * self.config.k * self.head_dim)  # scores, projected k/v
