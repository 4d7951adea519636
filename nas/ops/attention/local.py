"""Sliding-window attention with optional global tokens (Longformer, https://arxiv.org/abs/2004.05150).

Each query sees the keys within window // 2 positions. The sequence is cut into blocks of that
size, so a query block only needs its own and its two neighbour blocks: the cost is linear in n.
# b batch, h heads, n sequence, d head dim, m blocks, c block size, g global tokens
"""
import dataclasses

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore, key_bias
from nas.ops.attention.registry import ATTENTION


@dataclasses.dataclass(frozen=True)
class LocalConfig:
    window: int = 256  # query i sees key j when |i - j| <= window // 2
    global_tokens: int = 0  # the first g positions see every key, and every query sees them

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if self.global_tokens < 0:
            raise ValueError(f"global_tokens must be >= 0, got {self.global_tokens}")


@ATTENTION.register("local")
class LocalAttention(AttentionCore):
    Config = LocalConfig

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, h, n, d = q.shape
        radius = self.config.window // 2
        c = min(radius, n)  # a window covering the sequence makes it one block
        m = -(-n // c)
        g = min(self.config.global_tokens, n)
        pad = m * c - n  # the last block is padded, never truncated
        real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
        lowest = torch.finfo(q.dtype).min

        # Keys get one padding block on each side so that every query block has two neighbours;
        # unfold then gives block i the keys of blocks i-1, i, i+1 as a view.
        seen = F.pad(real, (c, c + pad), value=False)  # (b, (m+2)c)
        seen[:, c:c + g] = False  # global keys are reached below; counting them here would be twice
        seen = seen.unfold(1, 3 * c, c)  # (b, m, 3c)
        offset = torch.arange(c, device=q.device)[:, None] + c - torch.arange(3 * c, device=q.device)
        band = offset.abs() <= radius  # (c, 3c): query row i minus key column j, as positions
        allowed = band & seen[:, None, :, None, :]  # (b, 1, m, c, 3c)

        qb = F.pad(q * d ** -0.5, (0, 0, 0, pad)).reshape(b, h, m, c, d)  # (b, h, m, c, d)
        kb = F.pad(k, (0, 0, c, c + pad)).unfold(2, 3 * c, c)  # (b, h, m, d, 3c)
        vb = F.pad(v, (0, 0, c, c + pad)).unfold(2, 3 * c, c).transpose(-1, -2)  # (b, h, m, 3c, d)
        scores = (qb @ kb).masked_fill(~allowed, lowest)  # (b, h, m, c, 3c)
        if g:
            kg, vg = k[:, :, None, :g], v[:, :, None, :g]  # (b, h, 1, g, d)
            to_global = (qb @ kg.transpose(-1, -2)).masked_fill(~real[:, None, None, None, :g], lowest)
            scores = torch.cat([to_global, scores], dim=-1)  # (b, h, m, c, g+3c): one softmax
        p = scores.softmax(dim=-1)
        out = p[..., g:] @ vb  # (b, h, m, c, d)
        if g:
            out = out + p[..., :g] @ vg
        out = out.reshape(b, h, m * c, d)[:, :, :n]  # (b, h, n, d)
        if g:
            top = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=key_bias(mask, q.dtype))
            out = torch.cat([top, out[:, :, g:]], dim=2)  # global queries see every key
        return out

    def _sizes(self, n: int) -> tuple[int, int, int]:
        """Padded length, keys scored per local query, global tokens: the work forward does."""
        c = min(self.config.window // 2, n)
        g = min(self.config.global_tokens, n)
        return -(-n // c) * c, 3 * c + g, g

    def flops(self, n: int, heads: int) -> int:
        padded, keys, g = self._sizes(n)
        return 2 * 2 * heads * self.head_dim * (padded * keys + g * n)  # q k^T and p v

    def activation_elements(self, n: int, heads: int) -> int:
        padded, keys, g = self._sizes(n)
        return heads * (padded * keys + g * n)  # the blocked attention matrix and global rows
