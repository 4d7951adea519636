"""The short depthwise convolution that Mamba-2 (Dao and Gu 2024, https://arxiv.org/abs/2405.21060) and
Hyena (Poli et al. 2023, https://arxiv.org/abs/2302.10866) run over their projections before mixing.

Causal: y_t = sum_j weight[j] x_{t-w+1+j} + bias, so the step form needs only the last w - 1 inputs.
Centred (for bidirectional mixers): the window is centred on t, as PyTorch's padding='same'.
Per head and channel, so that a subnet with fewer heads slices the weights.
# b batch, h heads, n sequence, d channels per head, w kernel width
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _depthwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """(b, h, d, L) x, already padded -> (b, h, d, L - w + 1): PyTorch's grouped conv1d."""
    b, h, d, _ = x.shape
    w = weight.shape[-1]
    bias = None if bias is None else bias.reshape(h * d)
    y = F.conv1d(x.reshape(b, h * d, -1), weight.reshape(h * d, 1, w), bias, groups=h * d)
    return y.view(b, h, d, -1)


def causal_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The causal form over a sequence.

    Args:
        x: (b, h, n, d) inputs.
        weight: (h, d, w); bias: (h, d) or None.
        state: (b, h, d, w - 1), the inputs before position 0 (oldest first), or None for zeros.

    Returns:
        (b, h, n, d) outputs and the next state: the last w - 1 inputs.
    """
    b, h, n, d = x.shape
    w = weight.shape[-1]
    if state is None:
        state = x.new_zeros(b, h, d, w - 1)
    seen = torch.cat([state, x.transpose(-1, -2)], dim=-1)  # (b, h, d, w - 1 + n)
    return _depthwise(seen, weight, bias).transpose(-1, -2), seen[..., seen.shape[-1] - (w - 1) :]


def causal_conv_step(x: Tensor, state: Tensor, weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One decoding step. Shape: x (b, h, d), state (b, h, d, w - 1) -> output (b, h, d), the next state."""
    window = torch.cat([state, x[..., None]], dim=-1)  # (b, h, d, w): x_{t-w+1} .. x_t
    y = torch.einsum("bhdw,hdw->bhd", window, weight)
    return (y if bias is None else y + bias), window[..., 1:]


def centered_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The non-causal form: (w - 1) // 2 inputs before t and the rest after, zero beyond the ends.
    Shape: x (b, h, n, d), weight (h, d, w), bias (h, d) -> (b, h, n, d)."""
    w = weight.shape[-1]
    padded = F.pad(x.transpose(-1, -2), ((w - 1) // 2, w // 2))  # (b, h, d, n + w - 1)
    return _depthwise(padded, weight, bias).transpose(-1, -2)


def conv_flops(n: int, channels: int, width: int) -> int:
    """Multiply-adds of the depthwise convolution over n positions."""
    return 2 * n * channels * width


def conv_step_flops(channels: int, width: int) -> int:
    """Multiply-adds of one decoding step: the window of w inputs against the weights, per channel."""
    return 2 * channels * width


def conv_state_elements(channels: int, width: int) -> int:
    """The decoding state: the last w - 1 inputs of every channel."""
    return channels * (width - 1)
