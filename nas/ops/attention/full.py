"""Full softmax attention (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

Runs through `torch.nn.functional.scaled_dot_product_attention`, which picks a fused
(flash / memory-efficient) kernel where one applies.
# b batch, h heads, n sequence, d head dim
"""

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION


@ATTENTION.register("full")
class FullAttention(AttentionCore):
    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        # No padding, no mask: only a mask-free call takes the fused flash kernel on CUDA. Only
        # checked there (the check syncs with the device), and not while tracing (torch.export
        # cannot branch on data).
        no_padding = mask is None or (mask.is_cuda and not torch.compiler.is_compiling() and bool(mask.all()))
        attn_mask = None if no_padding else mask[:, None, None, :]  # (b, 1, 1, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (b, h, n, d)

    def flops(self, n: int, heads: int) -> int:
        return 2 * 2 * heads * n * n * self.head_dim  # q k^T and p v

    def activation_elements(self, n: int, heads: int) -> int:
        return heads * n * n  # the attention matrix (fused kernels keep less)
