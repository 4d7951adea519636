"""Linformer: keys and values projected along the sequence to a fixed length k
(Wang et al. 2020, https://arxiv.org/abs/2006.04768). Cost is linear in n. It has no causal form
(the projection mixes every position, the future's included): a causal task refuses it.
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
    # 2 (2026-12): tokens are mixed by E and F before the key and value projections, so their
    # bias enters once per projected row instead of weighted by E's and F's row sums.
    revision = 2
    causal_refusal = "its E and F mix all n positions into k rows, so every output reads the future tokens"

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        # E and F are shared across heads (the paper's headwise sharing); a length n < max_len
        # uses their first n columns. std 1/sqrt(max_len) keeps projected rows at the keys' scale.
        shape = (self.config.k, max_len)
        self.e = nn.Parameter(torch.randn(shape) * max_len**-0.5)  # (k, max_len) for keys
        self.f = nn.Parameter(torch.randn(shape) * max_len**-0.5)  # (k, max_len) for values

    def projection_inputs(self, x: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        # E (X W) = (E X) W: mixing the tokens before the key and value projections costs
        # k n D instead of k n (h d) per mix, and the projections then run over k rows, not n
        # (a quarter fewer FLOPs per layer at h d = D). The projection's bias is added once per
        # projected row, as for every other op's keys and values.
        n = x.shape[1]
        tokens = x if mask is None else x.masked_fill(~mask[:, :, None], 0)  # padding adds nothing
        return {"q": x, "k": self.e[:, :n] @ tokens, "v": self.f[:, :n] @ tokens}  # (b, n, D), (b, k, D) x2

    def mixed_rows(self, n: int) -> dict[str, int]:
        return {"k": self.config.k, "v": self.config.k}

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """q: (b, h, n, d); k, v: the projected mixes of `projection_inputs`, (b, h, k, d).
        Padding was removed from the mixes, so `mask` is not needed here."""
        return F.scaled_dot_product_attention(q, k, v)  # (b, h, n, d), fused over the k keys

    def flops(self, n: int, heads: int) -> int:
        k = self.config.k
        return 2 * 2 * heads * n * k * self.head_dim  # q k^T and p v (the mixes: see mixed_rows)

    def activation_elements(self, n: int, heads: int) -> int:
        return heads * n * self.config.k  # scores (the mixes and their projections: see mixed_rows)
