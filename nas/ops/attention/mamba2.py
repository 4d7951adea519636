"""Mamba-2's state-space-duality layer (SSD, Dao and Gu 2024, https://arxiv.org/abs/2405.21060).

By the paper's duality the shared projections are the SSM's inputs: C = q, B = k, x = v, one
group per head (N = p = head_dim). The op's own parameters are Mamba-2's: the short causal
depthwise convolution over [x, B, C] (then SiLU), the step size dt = softplus(v w_dt + dt_bias)
(read from each head's values; Mamba-2 projects x), A = -exp(A_log) and the skip D. Each head's
output is RMS-normalised, as Mamba-2's norm before its output projection (without the z gate).
Causal: the chunked SSD; step: the (N, p) state and the convolution's last w - 1 inputs;
bidirectional: the centred convolution, then the forward scan plus a backward one reading
positions > t (nas/ops/mixers/mamba2.py, bidirectional.py).
# b batch, h heads, n sequence, d head dim (p = N = d), w conv width
"""

import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION
from nas.ops.mixers.mamba2 import (
    Mamba2State,
    init_A_log,
    init_dt_bias,
    mamba2_activation_elements,
    mamba2_bidirectional,
    mamba2_causal,
    mamba2_dt,
    mamba2_flops,
    mamba2_state_bytes,
    mamba2_step,
    mamba2_step_flops,
    ssd_activation_elements,
    ssd_flops,
)


@dataclasses.dataclass(frozen=True)
class Mamba2Config:
    chunk: int = 64  # positions per chunk of the SSD's training form
    conv_width: int = 4  # taps of the short convolution over x, B and C (Mamba-2's d_conv)

    def __post_init__(self):
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.conv_width < 2:
            raise ValueError(f"conv_width must be >= 2, got {self.conv_width}")


@ATTENTION.register("mamba2")
class Mamba2(AttentionCore):
    Config = Mamba2Config
    per_head = ("conv_weight", "conv_bias", "dt_weight", "dt_bias", "A_log", "D")

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        h, d, w = max_heads, head_dim, self.config.conv_width
        bound = 1 / math.sqrt(w)  # nn.Conv1d's default for a depthwise kernel of w taps
        self.conv_weight = nn.Parameter(torch.empty(h, 3 * d, w).uniform_(-bound, bound))  # (h, 3d, w)
        self.conv_bias = nn.Parameter(torch.empty(h, 3 * d).uniform_(-bound, bound))  # (h, 3d)
        self.dt_weight = nn.Parameter(torch.randn(h, d) * d**-0.5)  # (h, d)
        self.dt_bias = nn.Parameter(init_dt_bias(h))  # (h,)
        self.A_log = nn.Parameter(init_A_log(h))  # (h,)
        self.D = nn.Parameter(torch.ones(h))  # (h,)

    def _parts(self, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The first h heads' step sizes (b, h, n) from the values, A, D and the convolution."""
        h = v.shape[1]
        dt = mamba2_dt(torch.einsum("bhnd,hd->bhn", v, self.dt_weight[:h]), self.dt_bias[:h])  # (b, h, n)
        return dt, -self.A_log[:h].exp(), self.D[:h], self.conv_weight[:h], self.conv_bias[:h]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        dt, A, D, conv_weight, conv_bias = self._parts(v)
        chunk = self.config.chunk
        if self.causal:
            y = mamba2_causal(v, k, q, dt, A, D, conv_weight, conv_bias, chunk, mask=mask)[0]  # (b, h, n, d)
        else:
            y = mamba2_bidirectional(v, k, q, dt, A, D, conv_weight, conv_bias, chunk, mask)  # (b, h, n, d)
        return F.rms_norm(y, (self.head_dim,))

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        d, w = self.head_dim, self.config.conv_width
        ssm = torch.zeros(batch, heads, d, d, device=device, dtype=dtype)  # (b, h, N, p)
        conv = torch.zeros(batch, heads, 3 * d, w - 1, device=device, dtype=dtype)  # (b, h, p + 2N, w - 1)
        return ssm, conv

    def step(self, q, k, v, state, position):
        dt, A, D, conv_weight, conv_bias = self._parts(v)
        x, B, C = v[:, :, 0], k[:, :, 0], q[:, :, 0]  # (b, h, d) each
        y, state = mamba2_step(x, B, C, dt[:, :, 0], A, D, conv_weight, conv_bias, Mamba2State(*state))
        return F.rms_norm(y, (self.head_dim,))[:, :, None], tuple(state)  # (b, h, 1, d)

    def flops(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        dt = 2 * heads * n * d  # the values against each head's dt weights
        total = mamba2_flops(n, heads, d, d, c.conv_width, c.chunk) + dt
        return total if self.causal else total + ssd_flops(n, heads, d, d, c.chunk)  # and the backward scan

    def activation_elements(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        layer = mamba2_activation_elements(n, heads, d, d, c.conv_width, c.chunk)
        if not self.causal:  # and the backward SSD's, as much as the forward one's
            layer += ssd_activation_elements(n, heads, d, d, c.chunk)
        return layer + heads * n * 2 + heads * n * (d + 1)  # dt's logits and dt; the output before its norm, its RMS

    def state_elements(self, n: int, heads: int) -> int:
        d, w = self.head_dim, self.config.conv_width
        return mamba2_state_bytes(heads, d, d, w, bytes_per_element=1)  # the SSM state and the conv window, any n

    def step_flops(self, n: int, heads: int) -> int:
        d = self.head_dim
        return mamba2_step_flops(heads, d, d, self.config.conv_width) + 2 * heads * d  # and dt's product
