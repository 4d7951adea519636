"""The short depthwise convolution that Mamba-2 (Dao and Gu 2024, https://arxiv.org/abs/2405.21060),
Hyena (Poli et al. 2023, https://arxiv.org/abs/2302.10866) and Gated DeltaNet (Yang et al. 2025,
https://arxiv.org/abs/2412.06464) run over their projections before mixing; `QKVConv` is the
latter's, for the linear-recurrent ops that take it as an option.

Causal: y_t = sum_j weight[j] x_{t-w+1+j} + bias, so the step form needs only the last w - 1 inputs.
Centred (for bidirectional mixers): the window is centred on t, as PyTorch's padding='same'.
Per head and channel, so that a subnet with fewer heads slices the weights.
# b batch, h heads, n sequence, d channels per head, w kernel width
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _depthwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """(b, h, d, L) x, already padded -> (b, h, d, L - w + 1): PyTorch's grouped conv1d."""
    b, h, d, _ = x.shape
    w = weight.shape[-1]
    bias = None if bias is None else bias.reshape(h * d)
    y = F.conv1d(x.reshape(b, h * d, -1), weight.reshape(h * d, 1, w), bias, groups=h * d)
    return y.view(b, h, d, -1)


def zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """(b, h, n, c) inputs with padded positions (mask (b, n) False) set to 0, so that they do not
    reach real positions through the convolution's window."""
    return x if mask is None else x * mask[:, None, :, None].to(x.dtype)


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


def check_short_conv(width: int) -> None:
    """An op's `short_conv` option: 0 (none) or a kernel of at least 2 taps."""
    if width != 0 and width < 2:
        raise ValueError(f"short_conv must be 0 (none) or >= 2 taps, got {width}")


def conv_cost(conv: QKVConv | None, what: str, *args: int) -> int:
    """One of an optional `QKVConv`'s cost methods (flops, step_flops, state_elements,
    activation_elements), 0 without one."""
    return 0 if conv is None else getattr(conv, what)(*args)


class QKVConv(nn.Module):
    """A short depthwise convolution and SiLU over each head's queries, keys and values, before a
    linear-recurrent mixer reads them: Gated DeltaNet's (flash-linear-attention's
    `use_short_conv=True`, width 4), optional in GLA. It hands every position its last w - 1
    predecessors inside one layer, which is what lets a single layer bind a key to the value after
    it (docs/hybrid.md). Causal for the causal form (decoding carries the last w - 1 inputs),
    centred for the bidirectional one.
    """

    def __init__(self, heads: int, head_dim: int, width: int):
        super().__init__()
        bound = 1 / math.sqrt(width)  # nn.Conv1d's default for a depthwise kernel of w taps
        self.weight = nn.Parameter(torch.empty(heads, 3 * head_dim, width).uniform_(-bound, bound))  # (h, 3d, w)
        self.bias = nn.Parameter(torch.empty(heads, 3 * head_dim).uniform_(-bound, bound))  # (h, 3d)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, causal: bool, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(b, h, n, d) each -> the same, convolved and through SiLU."""
        h, d = q.shape[1], q.shape[-1]
        qkv = zero_padding(torch.cat([q, k, v], dim=-1), mask)  # (b, h, n, 3d)
        weight, bias = self.weight[:h], self.bias[:h]
        qkv = causal_conv(qkv, weight, bias)[0] if causal else centered_conv(qkv, weight, bias)
        return tuple(part.contiguous() for part in F.silu(qkv).split(d, dim=-1))  # else matmuls copy them

    def init_state(self, batch: int, heads: int, device=None, dtype=None) -> Tensor:
        """The last w - 1 inputs of every channel, zeros before the first token: (b, h, 3d, w - 1)."""
        channels, width = self.weight.shape[1:]
        return torch.zeros(batch, heads, channels, width - 1, device=device, dtype=dtype)

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
        """One token: (b, h, d) each and the (b, h, 3d, w - 1) window -> the convolved three, the next window."""
        h, d = q.shape[1], q.shape[-1]
        qkv, state = causal_conv_step(torch.cat([q, k, v], dim=-1), state, self.weight[:h], self.bias[:h])
        return tuple(F.silu(qkv).split(d, dim=-1)), state

    # -- cost, for `heads` active heads over n positions
    def flops(self, n: int, heads: int) -> int:
        return conv_flops(n, heads * self.weight.shape[1], self.weight.shape[-1])

    def step_flops(self, heads: int) -> int:
        return conv_step_flops(heads * self.weight.shape[1], self.weight.shape[-1])

    def state_elements(self, heads: int) -> int:
        return conv_state_elements(heads * self.weight.shape[1], self.weight.shape[-1])

    def activation_elements(self, n: int, heads: int) -> int:
        """What backward keeps: the concatenated (padded) input, the convolution's output and SiLU's."""
        channels, width = self.weight.shape[1:]
        return heads * channels * ((n + width - 1) + 2 * n)
