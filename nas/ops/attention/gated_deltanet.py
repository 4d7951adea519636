"""The gated delta rule (Gated DeltaNet, Yang et al. 2025, https://arxiv.org/abs/2412.06464).

S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T, o_t = S_t^T q_t / sqrt(d), on
the shared q/k/v projections with queries and keys L2-normalised (the paper's qk-norm). The
gates are the op's own parameters, read from each head's key before its norm (the paper reads x):
g = -exp(A_log) softplus(k w_a + dt_bias) (Mamba-2's decay) and beta = sigmoid(k w_b). Each head's
output is RMS-normalised, as the paper's output norm. The paper's short convolution and SiLU run
over q, k and v before the rule (short_conv.py's QKVConv; flash-linear-attention's layer:
`use_short_conv=True`, width 4; `short_conv: 0` leaves it out); the gates read the key before it.
Causal: the chunked WY/UT form; step: the (d, d) state; bidirectional: the forward scan plus a
backward one reading positions > t (nas/ops/mixers/gated_deltanet.py, bidirectional.py).
# b batch, h heads, n sequence, d head dim
"""

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION
from nas.ops.mixers.gated_deltanet import (
    gated_delta_activation_elements,
    gated_delta_bidirectional,
    gated_delta_chunked,
    gated_delta_flops,
    gated_delta_gates,
    gated_delta_state_bytes,
    gated_delta_step,
    gated_delta_step_flops,
)
from nas.ops.mixers.mamba2 import init_A_log, init_dt_bias
from nas.ops.mixers.short_conv import QKVConv, check_short_conv, conv_cost


@dataclasses.dataclass(frozen=True)
class GatedDeltaNetConfig:
    chunk: int = 64  # positions per chunk of the training form (a triangular solve inside, the state across)
    short_conv: int = 4  # taps of the short convolution over q, k and v (the paper's 4); 0: none

    def __post_init__(self):
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        check_short_conv(self.short_conv)


@ATTENTION.register("gated_deltanet")
class GatedDeltaNet(AttentionCore):
    Config = GatedDeltaNetConfig
    # 2 (2026-12): the paper's short convolution over q, k and v by default (short_conv: 4); without
    # it no layer binds a key to the value after it (docs/hybrid.md, MQAR)
    revision = 2
    per_head = ("gate_weight", "A_log", "dt_bias")

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        h, d = max_heads, head_dim
        self.gate_weight = nn.Parameter(torch.randn(h, d, 2) * d**-0.5)  # (h, d, 2): the decay's and beta's logits
        self.A_log = nn.Parameter(init_A_log(h))  # (h,)
        self.dt_bias = nn.Parameter(init_dt_bias(h))  # (h,)
        self.conv = QKVConv(h, d, self.config.short_conv) if self.config.short_conv else None
        if self.conv is not None:
            self.per_head += ("conv.weight", "conv.bias")

    def gates(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """(b, h, n, d) keys before their norm -> log decays g and write rates beta, (b, h, n) each."""
        h = k.shape[1]
        a, b = (k @ self.gate_weight[:h]).unbind(-1)  # (b, h, n) each
        return gated_delta_gates(a, b, self.A_log[:h], self.dt_bias[:h])

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        g, beta = self.gates(k)
        if self.conv is not None:
            q, k, v = self.conv(q, k, v, self.causal, mask)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        if self.causal:
            y = gated_delta_chunked(q, k, v, g, beta, chunk=self.config.chunk, mask=mask)[0]  # (b, h, n, d)
        else:
            y = gated_delta_bidirectional(q, k, v, g, beta, chunk=self.config.chunk, mask=mask)  # (b, h, n, d)
        return F.rms_norm(y, (self.head_dim,))

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        memory = torch.zeros(batch, heads, self.head_dim, self.head_dim, device=device, dtype=dtype)  # (b, h, d, d)
        return (memory,) if self.conv is None else (memory, self.conv.init_state(batch, heads, device, dtype))

    def step(self, q, k, v, state, position):
        g, beta = (x[:, :, 0] for x in self.gates(k))  # (b, h) each
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]  # (b, h, d) each
        if self.conv is not None:
            (q, k, v), window = self.conv.step(q, k, v, state[1])
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        y, memory = gated_delta_step(q, k, v, g, beta, state[0])  # (b, h, d), (b, h, d, d)
        y = F.rms_norm(y, (self.head_dim,))[:, :, None]  # (b, h, 1, d)
        return y, ((memory,) if self.conv is None else (memory, window))

    def _gate_flops(self, n: int, heads: int) -> int:
        return 2 * heads * n * self.head_dim * 2  # the keys against each head's two gate columns

    def flops(self, n: int, heads: int) -> int:
        scans = 1 if self.causal else 2  # bidirectional: the forward and the backward scan
        d = self.head_dim
        total = scans * gated_delta_flops(n, heads, d, d, self.config.chunk) + self._gate_flops(n, heads)
        return total + conv_cost(self.conv, "flops", n, heads)

    def activation_elements(self, n: int, heads: int) -> int:
        d = self.head_dim
        scans = gated_delta_activation_elements(n, heads, d, d, self.config.chunk)
        if not self.causal:  # and the backward scan's, as much
            scans *= 2
        gates = heads * n * 4  # the gate logits, softplus's input, the decays and beta
        norms = heads * n * (2 * d + 2)  # q and k before their L2 norms, and the norms
        conv = conv_cost(self.conv, "activation_elements", n, heads)
        return scans + gates + norms + conv + heads * n * (d + 1)  # and the output before its RMS norm, its RMS

    def state_elements(self, n: int, heads: int) -> int:
        memory = gated_delta_state_bytes(heads, self.head_dim, self.head_dim, bytes_per_element=1)  # (h, d, d), any n
        return memory + conv_cost(self.conv, "state_elements", heads)

    def step_flops(self, n: int, heads: int) -> int:
        step = gated_delta_step_flops(heads, self.head_dim, self.head_dim) + self._gate_flops(1, heads)
        return step + conv_cost(self.conv, "step_flops", heads)
