"""Full softmax attention (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762).

Runs through `torch.nn.functional.scaled_dot_product_attention`, which picks a fused
(flash / memory-efficient) kernel where one applies; the causal form is its `is_causal`, and
its step form reads a KV cache.
# b batch, h heads, n sequence, d head dim, L cache length
"""

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore, causal_bias, slots_upto, write_slot
from nas.ops.attention.registry import ATTENTION


@ATTENTION.register("full")
class FullAttention(AttentionCore):
    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        # No padding, no mask: only a mask-free call takes the fused flash kernel on CUDA. Only
        # checked there (the check syncs with the device), and not while tracing (torch.export
        # cannot branch on data).
        no_padding = mask is None or (mask.is_cuda and not torch.compiler.is_compiling() and bool(mask.all()))
        if self.causal:
            if no_padding:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, h, n, d)
            # is_causal takes no mask beside it: the band and the padding as one finite bias
            bias = causal_bias(q.shape[2], mask, q.dtype, q.device)  # (b, 1, n, n)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (b, h, n, d)
        attn_mask = None if no_padding else mask[:, None, None, :]  # (b, 1, 1, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (b, h, n, d)

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        cache = torch.zeros(batch, heads, length, self.head_dim, device=device, dtype=dtype)  # (b, h, L, d)
        return cache, cache.clone()  # keys, values

    def step(self, q, k, v, state, position):
        keys, values = (write_slot(cache, x, position) for cache, x in zip(state, (k, v)))  # (b, h, L, d)
        seen = slots_upto(position, keys.shape[2])[None, None, None, :]  # (1, 1, 1, L)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=seen), (keys, values)  # (b, h, 1, d)

    def flops(self, n: int, heads: int) -> int:
        # q k^T and p v; causal: the fused kernels skip the blocks above the diagonal
        pairs = n * (n + 1) // 2 if self.causal else n * n
        return 2 * 2 * heads * pairs * self.head_dim

    def activation_elements(self, n: int, heads: int) -> int:
        return heads * n * n  # the attention matrix (fused kernels keep less)

    def state_elements(self, n: int, heads: int) -> int:
        return 2 * heads * n * self.head_dim  # the cache of keys and values

    def step_flops(self, n: int, heads: int) -> int:
        return 2 * 2 * heads * n * self.head_dim  # q k^T and p v over the n cached tokens
