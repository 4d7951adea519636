"""Hyena's order-2 operator (Poli et al. 2023, https://arxiv.org/abs/2302.10866): an implicit long
convolution with gating, computed by FFT.

On the shared projections: a short depthwise convolution over [q, k, v] (the paper's short
filter, width 3), then y = q * (h conv (k * v) + skip * k * v) per head and channel, with the
long filter h from a small MLP over lag features times a decay window (nas/ops/mixers/hyena.py's
`ImplicitFilter`, the op's own parameters, as are the short convolution's). Causal: the FFT
convolution zero-padded to 2n and the causal short convolution. Bidirectional: a two-sided filter
over lags -(n-1) .. n-1 and the centred short convolution.

Decoding is exact: the state caches the last `length` inputs k * v (a long convolution reads the
whole history, so Hyena's state grows with the context, unlike the recurrent mixers') and the
short convolution's window. The filter depends on the weights alone: `init_state` computes it
once for the decode that follows (`decode_filter`, dropped when the op is put back in training).
# b batch, h heads, n sequence, d head dim, L state length, w short conv width
"""

import dataclasses

import torch
from torch import Tensor, nn

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION
from nas.ops.mixers.hyena import (
    ImplicitFilter,
    hyena_activation_elements,
    hyena_bidirectional,
    hyena_causal,
    hyena_flops,
    hyena_state_bytes,
    hyena_step,
    hyena_step_flops,
)
from nas.ops.mixers.short_conv import (
    causal_conv,
    causal_conv_step,
    centered_conv,
    conv_flops,
    conv_state_elements,
    conv_step_flops,
)


@dataclasses.dataclass(frozen=True)
class HyenaConfig:
    order: int = 16  # width of the filter's MLP
    emb_dim: int = 3  # lag features: the lag and (emb_dim - 1) / 2 sine-cosine pairs (odd, >= 3)
    inner_layers: int = 2  # hidden (order, order) layers of the filter's MLP
    conv_width: int = 3  # taps of the short convolution over q, k and v

    def __post_init__(self):
        if self.order < 1 or self.inner_layers < 0:
            raise ValueError(f"order must be >= 1 and inner_layers >= 0, got {self.order} and {self.inner_layers}")
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3, got {self.emb_dim}")
        if self.conv_width < 1:
            raise ValueError(f"conv_width must be >= 1, got {self.conv_width}")


@ATTENTION.register("hyena")
class Hyena(AttentionCore):
    Config = HyenaConfig
    per_head = ("filter.out", "filter.skip", "conv_weight", "conv_bias")

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        c, h, d = self.config, max_heads, head_dim
        self.filter = ImplicitFilter(h, d, max_len, c.emb_dim, c.order, c.inner_layers, two_sided=not causal)
        bound = c.conv_width**-0.5  # nn.Conv1d's default for a depthwise kernel of w taps
        self.conv_weight = nn.Parameter(torch.empty(h, 3 * d, c.conv_width).uniform_(-bound, bound))  # (h, 3d, w)
        self.conv_bias = nn.Parameter(torch.empty(h, 3 * d).uniform_(-bound, bound))  # (h, 3d)
        self.register_buffer("decode_filter", None, persistent=False)  # (h, d, L) once init_state ran

    def _short_conv(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The short convolution over [q, k, v] (b, h, n, 3d), padded inputs zeroed first so that they
        reach no real position through the window."""
        h, d = q.shape[1], self.head_dim
        x = torch.cat([q, k, v], dim=-1)  # (b, h, n, 3d)
        if mask is not None:
            x = x * mask[:, None, :, None].to(x.dtype)
        weight, bias = self.conv_weight[:h], self.conv_bias[:h]
        x = causal_conv(x, weight, bias)[0] if self.causal else centered_conv(x, weight, bias)
        return x.split(d, dim=-1)  # (b, h, n, d) each

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        h, n = q.shape[1], q.shape[2]
        q, k, v = self._short_conv(q, k, v, mask)
        operator = hyena_causal if self.causal else hyena_bidirectional
        return operator(q, k, v, self.filter(n)[:h], self.filter.skip[:h], mask)  # (b, h, n, d)

    def train(self, mode: bool = True):
        self.decode_filter = None  # weights may change: init_state computes the filter again
        return super().train(mode)

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        with torch.no_grad():
            self.decode_filter = self.filter(length)  # (h, d, L): lags 0 .. L-1
        d, w = self.head_dim, self.config.conv_width
        cache = torch.zeros(batch, heads, d, length, device=device, dtype=dtype)  # (b, h, d, L): the last L inputs
        conv = torch.zeros(batch, heads, 3 * d, w - 1, device=device, dtype=dtype)  # (b, h, 3d, w - 1)
        return cache, conv

    def step(self, q, k, v, state, position):
        cache, window = state
        h, d, length = q.shape[1], self.head_dim, cache.shape[-1]
        cached = self.decode_filter is not None and self.decode_filter.shape[-1] == length
        long_filter = (self.decode_filter if cached else self.filter(length))[:h]  # (h, d, L)
        x = torch.cat([q, k, v], dim=-1)[:, :, 0]  # (b, h, 3d)
        x, window = causal_conv_step(x, window, self.conv_weight[:h], self.conv_bias[:h])
        q, k, v = x.split(d, dim=-1)  # (b, h, d) each
        y, cache = hyena_step(q, k, v, long_filter, self.filter.skip[:h], cache)  # (b, h, d)
        return y[:, :, None], (cache, window)  # (b, h, 1, d)

    def flops(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        operator = hyena_flops(n, heads, d, c.emb_dim, c.order, c.inner_layers, two_sided=not self.causal)
        return round(operator) + conv_flops(n, 3 * heads * d, c.conv_width)

    def activation_elements(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        operator = hyena_activation_elements(n, heads, d, c.order, c.inner_layers, two_sided=not self.causal)
        return operator + heads * n * 3 * d * 2  # and the short convolution's input and output

    def state_elements(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        cache = hyena_state_bytes(heads, d, n, bytes_per_element=1)  # grows with the context
        return cache + conv_state_elements(3 * heads * d, c.conv_width)

    def step_flops(self, n: int, heads: int) -> int:
        c, d = self.config, self.head_dim
        return hyena_step_flops(heads, d, n) + conv_step_flops(3 * heads * d, c.conv_width)
