"""Gated linear attention (Yang et al. 2024, https://arxiv.org/abs/2312.06635) and, with
`decay: fixed`, RetNet's retention (Sun et al. 2023, https://arxiv.org/abs/2307.08621).

S_t = diag(alpha_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / sqrt(d), on the shared q/k/v
projections. The gates are the op's own parameters: GLA's alpha_t = sigmoid(k_t W + b)^(1/16)
per key dim, read from the head's key (the paper reads x through a low-rank map), or RetNet's
fixed per-head decay 1 - 2^(-5-i). Each head's output is RMS-normalised, as the paper's and
RetNet's output norm (its gain is the output projection's to learn). `short_conv: w` runs a
short convolution and SiLU over q, k and v first (short_conv.py's QKVConv; flash-linear-attention's
GLA layer has it as `use_short_conv`, off by default); the gates still read the key before it.
Causal: the chunkwise form; step: the (d, d) state; bidirectional: the forward scan plus a
backward one reading positions > t (nas/ops/mixers/gla.py, bidirectional.py).
# b batch, h heads, n sequence, d head dim
"""

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION
from nas.ops.mixers.gla import (
    gla_activation_elements,
    gla_bidirectional,
    gla_chunked,
    gla_flops,
    gla_gate,
    gla_state_bytes,
    gla_step,
    gla_step_flops,
    retention_log_decay,
)
from nas.ops.mixers.short_conv import QKVConv, check_short_conv, conv_cost

DECAYS = ("data", "fixed")


@dataclasses.dataclass(frozen=True)
class GlaConfig:
    decay: str = "data"  # data: GLA's gates from each key, per key dim; fixed: RetNet's decay per head
    chunk: int = 64  # positions per chunk of the training form (a (c, c) product inside, the state across)
    sub_chunk: int = 16  # data: positions per sub-chunk of a chunk's scores (the paper's secondary chunking)
    short_conv: int = 0  # taps of a short convolution over q, k and v (fla's conv_size 4); 0: none

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if self.chunk < 1 or self.sub_chunk < 1:
            raise ValueError(f"chunk and sub_chunk must be >= 1, got {self.chunk} and {self.sub_chunk}")
        if self.decay == "data" and self.chunk % self.sub_chunk:
            raise ValueError(f"chunk must be a multiple of sub_chunk, got {self.chunk} and {self.sub_chunk}")
        check_short_conv(self.short_conv)


@ATTENTION.register("gla")
class GatedLinearAttention(AttentionCore):
    Config = GlaConfig

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        h, d = max_heads, head_dim
        self.per_dim = self.config.decay == "data"
        if self.per_dim:
            self.gate_weight = nn.Parameter(torch.randn(h, d, d) * d**-0.5)  # (h, d, d)
            self.gate_bias = nn.Parameter(torch.zeros(h, d))  # (h, d)
            self.per_head = ("gate_weight", "gate_bias")
        else:
            # a buffer, not a constant of the head's index: sorting heads by importance moves it with them
            self.register_buffer("log_decay", retention_log_decay(h))  # (h,)
            self.per_head = ("log_decay",)
        self.conv = QKVConv(h, d, self.config.short_conv) if self.config.short_conv else None
        if self.conv is not None:
            self.per_head += ("conv.weight", "conv.bias")

    def log_gates(self, k: Tensor) -> Tensor:
        """(b, h, n, d) keys -> log decays (b, h, n, d) per key dim, or (b, h, n) one per head."""
        b, h, n, _ = k.shape
        if not self.per_dim:
            return self.log_decay[:h, None].expand(b, h, n)  # (b, h, n)
        return gla_gate(k @ self.gate_weight[:h] + self.gate_bias[:h, None])  # (b, h, n, d)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        c = self.config
        g = self.log_gates(k)
        if self.conv is not None:
            q, k, v = self.conv(q, k, v, self.causal, mask)
        if self.causal:
            y = gla_chunked(q, k, v, g, chunk=c.chunk, sub_chunk=c.sub_chunk, mask=mask)[0]  # (b, h, n, d)
        else:
            y = gla_bidirectional(q, k, v, g, chunk=c.chunk, sub_chunk=c.sub_chunk, mask=mask)  # (b, h, n, d)
        return F.rms_norm(y, (self.head_dim,))

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        memory = torch.zeros(batch, heads, self.head_dim, self.head_dim, device=device, dtype=dtype)  # (b, h, d, d)
        return (memory,) if self.conv is None else (memory, self.conv.init_state(batch, heads, device, dtype))

    def step(self, q, k, v, state, position):
        g = self.log_gates(k)[:, :, 0]  # (b, h, d) or (b, h)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (b, h, d) each
        if self.conv is not None:
            (q, k, v), window = self.conv.step(q, k, v, state[1])
        y, memory = gla_step(q, k, v, g, state[0])  # (b, h, d), (b, h, d, d)
        y = F.rms_norm(y, (self.head_dim,))[:, :, None]  # (b, h, 1, d)
        return y, ((memory,) if self.conv is None else (memory, window))

    def _gate_flops(self, n: int, heads: int) -> int:
        return 2 * heads * n * self.head_dim**2 if self.per_dim else 0  # the keys through each head's (d, d) map

    def flops(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        scans = 1 if self.causal else 2  # bidirectional: the forward and the backward scan
        total = scans * gla_flops(n, heads, d, d, c.chunk, c.sub_chunk, self.per_dim) + self._gate_flops(n, heads)
        return total + conv_cost(self.conv, "flops", n, heads)

    def activation_elements(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        scans = gla_activation_elements(n, heads, d, d, c.chunk, c.sub_chunk, self.per_dim)
        if not self.causal:  # and the backward scan's, as much
            scans *= 2
        gates = 2 * heads * n * d if self.per_dim else 0  # the gate logits and the log decays
        conv = conv_cost(self.conv, "activation_elements", n, heads)
        return scans + gates + conv + heads * n * (d + 1)  # the output before its norm, and its RMS

    def state_elements(self, n: int, heads: int) -> int:
        memory = gla_state_bytes(heads, self.head_dim, self.head_dim, bytes_per_element=1)  # (h, d, d), any n
        return memory + conv_cost(self.conv, "state_elements", heads)

    def step_flops(self, n: int, heads: int) -> int:
        step = gla_step_flops(heads, self.head_dim, self.head_dim) + self._gate_flops(1, heads)
        return step + conv_cost(self.conv, "step_flops", heads)
