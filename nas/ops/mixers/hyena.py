"""Hyena's implicit long convolution with gating (Poli et al. 2023, https://arxiv.org/abs/2302.10866).

The order-2 operator per head and channel: y = q * (h conv u + skip * u) with u = k * v, where the
filter h, as long as the sequence, comes from a small MLP with sine activations over positional
features of the lag, times an exponential decay window (the paper's sec. 3.3; safari's HyenaFilter:
ExponentialModulation, PositionalEmbedding, Sin). The convolution runs by FFT in O(n log n): causal,
zero-padded to 2n so nothing wraps around. The bidirectional form uses a two-sided filter, the
same MLP over lags -(n-1) .. n-1 (the sine features make it asymmetric), so y_t reads every u_s.

Decoding: the exact step form of a long convolution needs every past input, so its state is a
cache of the last max_len inputs u (fixed shape, (b, h, d, max_len)), and each token costs
O(max_len d) per head: unlike the recurrent mixers, Hyena's decode state grows with the context.
The short convolution over q, k, v that the Hyena block runs first is short_conv.py's.
# b batch, h heads, n sequence, d channels per head, L max_len, e feature dim, o MLP width
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def lag_features(lags: Tensor, max_len: int, emb_dim: int) -> Tensor:
    """(L,) integer lags -> (L, e): the lag over max_len - 1, then cosines and sines of (e - 1) // 2
    frequencies (safari's PositionalEmbedding; a negative lag flips the sines)."""
    bands = (emb_dim - 1) // 2
    t = lags.float() / max(max_len - 1, 1)  # (L,)
    f = torch.linspace(1e-4, bands - 1, bands)  # (bands,)
    angle = 2 * math.pi * lags.float()[:, None] / max_len * f  # (L, bands)
    return torch.cat([t[:, None], angle.cos(), -angle.sin()], dim=-1)  # exp(-i f w): real, imaginary


def decay_rates(channels: int, fast: float = 0.3, slow: float = 1.5, target: float = 1e-2) -> Tensor:
    """(channels,) rates of the window exp(-rate |t|): the fastest reaches `target` at t = fast,
    the slowest at t = slow (t = lag / (max_len - 1); safari's ExponentialModulation)."""
    return torch.linspace(math.log(target) / slow, math.log(target) / fast, channels).abs()


class ImplicitFilter(nn.Module):
    """The filter of every head and channel, from an MLP over lag features.

    `per_head` parameters have heads as their leading dim, so a subnet with fewer heads slices
    them. Every head gets the same spread of decay rates over its channels.

    Args:
        heads, head_dim: channels are heads * head_dim.
        max_len: the longest filter.
        emb_dim: lag features (odd: the lag, and (e - 1) // 2 cosine-sine pairs).
        order: the MLP's width.
        inner_layers: hidden (order, order) layers.
        freq: initial frequency of the sine activations (learned, per unit).
        two_sided: lags -(max_len - 1) .. max_len - 1, for the bidirectional form.
    """

    per_head = ("out", "skip")

    def __init__(
        self,
        heads: int,
        head_dim: int,
        max_len: int,
        emb_dim: int = 3,
        order: int = 16,
        inner_layers: int = 2,
        freq: float = 1.0,
        two_sided: bool = False,
    ):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3, got {emb_dim}")
        self.max_len = max_len
        self.two_sided = two_sided
        lags = torch.arange(-(max_len - 1) if two_sided else 0, max_len)
        self.register_buffer("features", lag_features(lags, max_len, emb_dim), persistent=False)  # (L, e)
        self.register_buffer("lag_t", lags.abs().float() / max(max_len - 1, 1), persistent=False)  # (L,)
        self.register_buffer("rates", decay_rates(head_dim), persistent=False)  # (d,)
        self.layers = nn.ModuleList(
            [nn.Linear(emb_dim, order)] + [nn.Linear(order, order) for _ in range(inner_layers)]
        )
        self.freqs = nn.ParameterList([nn.Parameter(torch.full((order,), freq)) for _ in self.layers])
        self.out = nn.Parameter(torch.randn(heads, head_dim, order) / math.sqrt(order))  # (h, d, o)
        self.skip = nn.Parameter(torch.randn(heads, head_dim))  # (h, d): the bias term D u

    def forward(self, n: int) -> Tensor:
        """The filter for length n: (h, d, n) at lags 0 .. n-1, or two-sided (h, d, 2n - 1) at lags
        -(n-1) .. n-1."""
        lo, hi = (self.max_len - n, self.max_len + n - 1) if self.two_sided else (0, n)
        z = self.features[lo:hi]  # (n or 2n-1, e)
        for layer, freq in zip(self.layers, self.freqs):
            z = torch.sin(freq * layer(z))  # (., o)
        window = torch.exp(-self.lag_t[lo:hi, None] * self.rates)  # (., d)
        return torch.einsum("hdo,lo->hdl", self.out, z) * window.T  # (h, d, n or 2n-1)


def fft_conv(u: Tensor, h: Tensor) -> Tensor:
    """Causal y_t = sum_{s <= t} h_{t-s} u_s by FFT, zero-padded to 2n. Shape: u (b, h, n, d), h (h, d, n)
    -> (b, h, n, d)."""
    n = u.shape[2]
    u_f = torch.fft.rfft(u.transpose(-1, -2), n=2 * n)  # (b, h, d, n + 1)
    h_f = torch.fft.rfft(h, n=2 * n)  # (h, d, n + 1)
    return torch.fft.irfft(u_f * h_f, n=2 * n)[..., :n].transpose(-1, -2)  # (b, h, n, d)


def fft_conv_two_sided(u: Tensor, h: Tensor) -> Tensor:
    """y_t = sum_s h_{t-s} u_s over every s, by FFT. Shape: u (b, h, n, d), h (h, d, 2n - 1) at lags
    -(n-1) .. n-1 -> (b, h, n, d).

    In a circular convolution of length 2n, lag -j sits at index 2n - j; index n, which no pair of
    positions reaches, is 0.
    """
    n = u.shape[2]
    circular = torch.cat([h[..., n - 1 :], torch.zeros_like(h[..., :1]), h[..., : n - 1]], dim=-1)  # (h, d, 2n)
    u_f = torch.fft.rfft(u.transpose(-1, -2), n=2 * n)  # (b, h, d, n + 1)
    return torch.fft.irfft(u_f * torch.fft.rfft(circular), n=2 * n)[..., :n].transpose(-1, -2)


def _gated_input(k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """u = k * v, zero at padded positions so that they reach no real one."""
    u = k * v
    return u if mask is None else u * mask[:, None, :, None].to(u.dtype)


def hyena_causal(q: Tensor, k: Tensor, v: Tensor, h: Tensor, skip: Tensor, mask: Tensor | None = None) -> Tensor:
    """The causal operator q * (h conv (k v) + skip * k v). Shape: q, k, v (b, h, n, d), h (h, d, n),
    skip (h, d), mask (b, n) bool -> (b, h, n, d)."""
    u = _gated_input(k, v, mask)
    return q * (fft_conv(u, h) + skip[:, None] * u)


def hyena_bidirectional(q: Tensor, k: Tensor, v: Tensor, h: Tensor, skip: Tensor, mask: Tensor | None = None) -> Tensor:
    """The operator with a two-sided filter h (h, d, 2n - 1); shapes otherwise as `hyena_causal`'s."""
    u = _gated_input(k, v, mask)
    return q * (fft_conv_two_sided(u, h) + skip[:, None] * u)


def hyena_step(q: Tensor, k: Tensor, v: Tensor, h: Tensor, skip: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
    """One decoding step, exact: the cache holds the last L inputs u, newest last (zeros before the
    first token), and the output reads all of them against the filter, O(L d) per head.

    Shape: q, k, v (b, h, d), h (h, d, L) the filter at max_len, skip (h, d), cache (b, h, d, L)
    -> output (b, h, d), the next cache.
    """
    u = k * v  # (b, h, d)
    cache = torch.cat([cache[..., 1:], u[..., None]], dim=-1)  # (b, h, d, L): u_{t-L+1} .. u_t
    y = torch.einsum("bhdl,hdl->bhd", cache, h.flip(-1))  # sum_j h_j u_{t-j}
    return q * (y + skip * u), cache


# -- cost: forward FLOPs (the filter MLP's matmuls and the FFTs), decode state
def fft_flops(size: int) -> float:
    """One real FFT (or inverse) of `size` points, by the usual count of a radix-2 FFT: 5/2 size log2 size
    (half a complex FFT's 5 size log2 size)."""
    return 2.5 * size * math.log2(size)


def hyena_flops(
    n: int, heads: int, head_dim: int, emb_dim: int = 3, order: int = 16, inner_layers: int = 2, two_sided: bool = False
) -> float:
    """FLOPs of the filter and the operator for one sequence: the MLP over n lags (2n - 1 two-sided),
    the filter's output layer, and three real FFTs of 2n points per channel (input, filter, inverse)."""
    lags = 2 * n - 1 if two_sided else n
    channels = heads * head_dim
    mlp = 2 * lags * (emb_dim * order + inner_layers * order * order + order * channels)
    return mlp + 3 * channels * fft_flops(2 * n)


def hyena_activation_elements(
    n: int, heads: int, head_dim: int, order: int = 16, inner_layers: int = 2, two_sided: bool = False
) -> int:
    """Elements the filter and the operator keep for backward for one sequence, beside their inputs
    and parameters (the tests count them against autograd's saved tensors): per MLP layer its
    output, the scaled output and the sine; the window; the operator's u
    and gated sum, the zero-padded u and filter, and their spectra (complex: two elements each)."""
    lags = 2 * n - 1 if two_sided else n
    channels = heads * head_dim
    mlp = lags * (3 * order * (1 + inner_layers) + head_dim)
    return mlp + channels * (2 * n + 2 * 2 * n + 2 * 2 * (n + 1))


def hyena_step_flops(heads: int, head_dim: int, max_len: int) -> int:
    """Multiply-adds of one decoding step: the cache of max_len inputs against the filter, per channel."""
    return 2 * heads * head_dim * max_len


def hyena_state_bytes(heads: int, head_dim: int, max_len: int, bytes_per_element: int = 4) -> int:
    """Decoding state of one sequence: the cache of the last max_len inputs, per head and channel.
    It grows with max_len: the exact step of a long convolution needs the whole history."""
    return heads * head_dim * max_len * bytes_per_element
