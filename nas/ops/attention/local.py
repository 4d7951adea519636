"""Sliding-window attention with optional global tokens (Longformer, https://arxiv.org/abs/2004.05150).

Each query sees the keys within window // 2 positions. The sequence is cut into blocks of that
size, so a query block only needs its own and its two neighbour blocks: the cost is linear in n.
The causal form is the left half of the band (keys i - window // 2 .. i, and the global tokens
up to i), so a query block needs only its own block and the one before; its step form keeps the
last window // 2 + 1 keys and values in a ring buffer, and the global tokens' beside it.
# b batch, h heads, n sequence, d head dim, m blocks, c block size, g global tokens, R ring slots
"""

import dataclasses

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore, causal_bias, key_bias, write_slot
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
        after = 0 if self.causal else c  # keys of the next block: none in the causal form
        span = 2 * c + after  # keys a query block scores: the block before, its own, any after
        real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask

        # Which keys each query block may see: its own block and its neighbours, cut to the band.
        # Keys get one padding block before (and one after) so that the end blocks have neighbours.
        seen = F.pad(real, (c, after + pad), value=False)  # (b, (m+1)c + after)
        seen[:, c : c + g] = False  # global keys come first below; counting them here would be twice
        seen = seen.unfold(1, span, c)  # (b, m, span)
        offset = torch.arange(c, device=q.device)[:, None] + c - torch.arange(span, device=q.device)  # query - key
        band = (offset >= 0) & (offset <= radius) if self.causal else offset.abs() <= radius  # (c, span)
        allowed = band & seen[:, :, None, :]  # (b, m, c, span)
        if g:
            glob = real[:, None, None, :g].expand(b, m, c, g)  # (b, m, c, g)
            if self.causal:  # a global key is seen from its own position on
                at = torch.arange(m * c, device=q.device).view(m, c, 1)
                glob = glob & (at >= torch.arange(g, device=q.device))
            allowed = torch.cat([glob, allowed], dim=-1)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~allowed, torch.finfo(q.dtype).min).view(b * m, 1, c, -1)

        # Blocks go into the batch dim, so the fused kernel runs them all at once; the
        # sequence-major layout (b, n, h, d) of the projections makes that a view.
        qb = F.pad(q.transpose(1, 2), (0, 0, 0, 0, 0, pad)).reshape(b * m, c, h, d).transpose(1, 2)
        kb, vb = (
            F.pad(x.transpose(1, 2), (0, 0, 0, 0, c, after + pad))  # (b, (m+1)c + after, h, d)
            .unfold(1, span, c)
            .transpose(-1, -2)
            .reshape(b * m, h, span, d)
            for x in (k, v)
        )  # (b m, h, span, d): blocks i-1, i (and i+1)
        if g:
            kb, vb = (
                torch.cat([x[:, None, :, :g].expand(b, m, h, g, d).reshape(b * m, h, g, d), xb], dim=2)
                for x, xb in ((k, kb), (v, vb))
            )  # (b m, h, g+span, d)
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias)  # (b m, h, c, d)
        out = out.transpose(1, 2).reshape(b, m * c, h, d)[:, :n].transpose(1, 2)  # (b, h, n, d)
        if g:
            if self.causal:  # global queries see every key up to themselves: global ones only
                top_bias = causal_bias(g, None if mask is None else mask[:, :g], q.dtype, q.device)
                top = F.scaled_dot_product_attention(q[:, :, :g], k[:, :, :g], v[:, :, :g], attn_mask=top_bias)
            else:
                top = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=key_bias(mask, q.dtype))
            out = torch.cat([top, out[:, :, g:]], dim=2)  # global queries see every key
        return out

    def _state_sizes(self, length: int) -> tuple[int, int]:
        """Global slots and ring slots of the step state for contexts of up to `length` tokens."""
        return min(self.config.global_tokens, length), min(self.config.window // 2 + 1, length)

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        g, ring = self._state_sizes(length)

        def slots(count: int) -> Tensor:
            return torch.zeros(batch, heads, count, self.head_dim, device=device, dtype=dtype)  # (b, h, count, d)

        # keys and values of the ring, then of the global tokens (none without them)
        return (slots(ring), slots(ring)) + ((slots(g), slots(g)) if g else ())

    def step(self, q, k, v, state, position):
        keys, values, *global_kv = state  # (b, h, R, d) each, then (b, h, g, d) each
        ring, g = keys.shape[2], global_kv[0].shape[2] if global_kv else 0
        # Ring slot s holds the latest position p <= t with p = s mod R, all within the band; a
        # global token (p < g) is read from its own slot instead, so it is never counted twice.
        held = position - torch.remainder(position - torch.arange(ring, device=q.device), ring)  # (R,)
        seen = held >= g  # also hides slots not written yet (p < 0)
        at = torch.remainder(position, ring)
        keys, values = write_slot(keys, k, at), write_slot(values, v, at)  # (b, h, R, d)
        state = (keys, values)
        if g:
            # written only while the position is a global token's (slots past g do not exist)
            is_global = (torch.arange(g, device=q.device) == position)[:, None]  # (g, 1)
            global_kv = tuple(torch.where(is_global, x, cache) for cache, x in zip(global_kv, (k, v)))  # (b, h, g, d)
            state += global_kv
            keys, values = (torch.cat([glob, x], dim=2) for glob, x in zip(global_kv, (keys, values)))
            seen = torch.cat([torch.arange(g, device=q.device) <= position, seen])  # (g + R,)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=seen[None, None, None, :])  # (b, h, 1, d)
        return out, state

    def _sizes(self, n: int) -> tuple[int, int, int]:
        """Padded length, keys scored per local query, global tokens: the work forward does."""
        c = min(self.config.window // 2, n)
        g = min(self.config.global_tokens, n)
        return -(-n // c) * c, (2 if self.causal else 3) * c + g, g

    def flops(self, n: int, heads: int) -> int:
        padded, keys, g = self._sizes(n)
        rows = g * g if self.causal else g * n  # the global queries' scores
        return 2 * 2 * heads * self.head_dim * (padded * keys + rows)  # q k^T and p v

    def activation_elements(self, n: int, heads: int) -> int:
        padded, keys, g = self._sizes(n)
        rows = g * g if self.causal else g * n
        return heads * (padded * keys + rows)  # the blocked attention matrix and global rows

    def state_elements(self, n: int, heads: int) -> int:
        g, ring = self._state_sizes(n)
        return 2 * heads * (ring + g) * self.head_dim  # keys and values of the ring and the global tokens

    def step_flops(self, n: int, heads: int) -> int:
        g, ring = self._state_sizes(n)
        return 2 * 2 * heads * (ring + g) * self.head_dim  # q k^T and p v over every slot
