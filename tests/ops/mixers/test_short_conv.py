"""The short depthwise convolution against PyTorch's own Conv1d, and its step form."""

import pytest
import torch

from nas.ops.mixers.short_conv import (
    causal_conv,
    causal_conv_step,
    centered_conv,
    conv_flops,
    conv_state_elements,
    conv_step_flops,
)
from tests.ops.mixers.counting import counted_flops


def torch_conv(weight, bias, padding):
    """PyTorch's depthwise Conv1d over (b, h d, n) with our (h, d, w) weights."""
    h, d, w = weight.shape
    conv = torch.nn.Conv1d(h * d, h * d, w, groups=h * d, padding=padding, dtype=weight.dtype)
    conv.weight.data, conv.bias.data = weight.reshape(h * d, 1, w), bias.reshape(h * d)
    return lambda x: (
        conv(x.transpose(-1, -2).reshape(x.shape[0], h * d, -1)).view(x.shape[0], h, d, -1).transpose(-1, -2)
    )


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # the reference's own warning
@pytest.mark.parametrize("w", [2, 3, 4])
def test_causal_and_centred_equal_pytorch_conv1d(w):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 5, dtype=torch.float64)
    weight, bias = torch.randn(3, 5, w, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    # causal: pad w - 1 on both sides and keep the first n outputs (Mamba's own way)
    torch.testing.assert_close(causal_conv(x, weight, bias)[0], torch_conv(weight, bias, w - 1)(x)[:, :, :17])
    torch.testing.assert_close(centered_conv(x, weight, bias), torch_conv(weight, bias, "same")(x))


def test_step_form_and_carried_state_equal_the_whole_sequence():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 5, dtype=torch.float64)
    weight, bias = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    whole, end = causal_conv(x, weight, bias)
    head, state = causal_conv(x[:, :, :6], weight, bias)
    outs = [head]
    for t in range(6, 17):
        y, state = causal_conv_step(x[:, :, t], state, weight, bias)
        outs.append(y[:, :, None])
    torch.testing.assert_close(torch.cat(outs, dim=2), whole)
    assert torch.equal(state, end) and torch.equal(end, x[:, :, -3:].transpose(-1, -2))
    tail, _ = causal_conv(x[:, :, 6:], weight, bias, state=causal_conv(x[:, :, :6], weight, bias)[1])
    torch.testing.assert_close(torch.cat([head, tail], dim=2), whole)


def test_cost_counts_the_convolution():
    x, weight = torch.randn(1, 3, 40, 5), torch.randn(3, 5, 4)
    assert conv_flops(40, 15, 4) == counted_flops(lambda: causal_conv(x, weight))
    assert conv_state_elements(15, 4) == causal_conv(x, weight)[1].numel()
    state = torch.zeros(1, 3, 5, 3)
    assert conv_step_flops(15, 4) == counted_flops(lambda: causal_conv_step(x[:, :, 0], state, weight))
