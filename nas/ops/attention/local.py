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

        # Which keys each query block may see: its own block and its two neighbours, cut to the
        # band. Keys get one padding block on each side so that the end blocks have neighbours.
        seen = F.pad(real, (c, c + pad), value=False)  # (b, (m+2)c)
        seen[:, c : c + g] = False  # global keys come first below; counting them here would be twice
        seen = seen.unfold(1, 3 * c, c)  # (b, m, 3c)
        offset = torch.arange(c, device=q.device)[:, None] + c - torch.arange(3 * c, device=q.device)
        allowed = (offset.abs() <= radius) & seen[:, :, None, :]  # (b, m, c, 3c)
        if g:
            allowed = torch.cat([real[:, None, None, :g].expand(b, m, c, g), allowed], dim=-1)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~allowed, torch.finfo(q.dtype).min).view(b * m, 1, c, -1)

        # Blocks go into the batch dim, so the fused kernel runs them all at once; the
        # sequence-major layout (b, n, h, d) of the projections makes that a view.
        qb = F.pad(q.transpose(1, 2), (0, 0, 0, 0, 0, pad)).reshape(b * m, c, h, d).transpose(1, 2)
        kb, vb = (
            F.pad(x.transpose(1, 2), (0, 0, 0, 0, c, c + pad))  # (b, (m+2)c, h, d)
            .unfold(1, 3 * c, c)
            .transpose(-1, -2)
            .reshape(b * m, h, 3 * c, d)
            for x in (k, v)
        )  # (b m, h, 3c, d): blocks i-1, i, i+1
        if g:
            kb, vb = (
                torch.cat([x[:, None, :, :g].expand(b, m, h, g, d).reshape(b * m, h, g, d), xb], dim=2)
                for x, xb in ((k, kb), (v, vb))
            )  # (b m, h, g+3c, d)
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias)  # (b m, h, c, d)
        out = out.transpose(1, 2).reshape(b, m * c, h, d)[:, :n].transpose(1, 2)  # (b, h, n, d)
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
