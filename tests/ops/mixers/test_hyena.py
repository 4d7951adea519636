"""Hyena's FFT long convolution against a direct convolution and flash-linear-attention's fft_conv,
its step form, its filter; its cost against counting."""

import math

import pytest
import torch

from nas.ops.mixers.hyena import (
    ImplicitFilter,
    decay_rates,
    fft_conv,
    fft_conv_two_sided,
    fft_flops,
    hyena_activation_elements,
    hyena_bidirectional,
    hyena_causal,
    hyena_flops,
    hyena_state_bytes,
    hyena_step,
    hyena_step_flops,
)
from tests.ops.mixers.counting import counted_flops, grads, saved_elements
from tests.ops.mixers.reference import fla


def direct_conv(u, h, two_sided=False):
    """y_t = sum_s h_{t-s} u_s, one pair (t, s) at a time: s <= t, or every s with h at lag t - s
    stored at index t - s + n - 1 when two-sided."""
    b, heads, n, d = u.shape
    y = torch.zeros_like(u)
    for t in range(n):
        for s in range(n) if two_sided else range(t + 1):
            y[:, :, t] += h[..., t - s + (n - 1 if two_sided else 0)] * u[:, :, s]
    return y


def test_fft_conv_equals_direct_convolution():
    torch.manual_seed(0)
    u, h = torch.randn(2, 3, 21, 4, dtype=torch.float64), torch.randn(3, 4, 21, dtype=torch.float64)
    torch.testing.assert_close(fft_conv(u, h), direct_conv(u, h))
    h2 = torch.randn(3, 4, 41, dtype=torch.float64)
    torch.testing.assert_close(fft_conv_two_sided(u, h2), direct_conv(u, h2, two_sided=True))


def test_fft_conv_equals_fla_long_conv():
    """fla's fft_conv returns conv + u; with k_rev it adds the anti-causal filter k_rev (its lag 0 too)."""
    long_conv = fla("modules/long_conv.py")
    torch.manual_seed(0)
    u, k, k_rev = torch.randn(2, 3, 33, 4), torch.randn(3, 4, 33), torch.randn(3, 4, 33)
    theirs = long_conv.fft_conv(u.transpose(-1, -2).reshape(2, 12, 33), k.reshape(12, 33), None, gelu=False)
    torch.testing.assert_close(fft_conv(u, k) + u, theirs.view(2, 3, 4, 33).transpose(-1, -2), atol=1e-5, rtol=1e-5)
    two_sided = torch.cat(
        [k_rev[..., 1:].flip(-1), (k[..., :1] + k_rev[..., :1]), k[..., 1:]], dim=-1
    )  # lags -32 .. 32
    theirs = long_conv.fft_conv(
        u.transpose(-1, -2).reshape(2, 12, 33), k.reshape(12, 33), None, gelu=False, k_rev=k_rev.reshape(12, 33)
    )
    torch.testing.assert_close(
        fft_conv_two_sided(u, two_sided) + u, theirs.view(2, 3, 4, 33).transpose(-1, -2), atol=1e-5, rtol=1e-5
    )


def layer_inputs(n=30, heads=2, d=4, max_len=48, two_sided=False, dtype=torch.float64):
    torch.manual_seed(0)
    filt = ImplicitFilter(heads, d, max_len, two_sided=two_sided).to(dtype)
    q, k, v = (torch.randn(2, heads, n, d, dtype=dtype) for _ in range(3))
    return filt, q, k, v


def test_causal_operator_and_gradients_equal_the_direct_form():
    filt, q, k, v = layer_inputs()
    ours = [t.clone().requires_grad_() for t in (q, k, v)]
    theirs = [t.clone().requires_grad_() for t in (q, k, v)]
    h_ours, h_theirs = (filt(30).detach().requires_grad_() for _ in range(2))
    skip = filt.skip.detach()
    y = hyena_causal(*ours, h_ours, skip)
    u = theirs[1] * theirs[2]
    want = theirs[0] * (direct_conv(u, h_theirs) + skip[:, None] * u)
    torch.testing.assert_close(y, want)
    for got, ref in zip(grads(y, [*ours, h_ours]), grads(want, [*theirs, h_theirs])):
        torch.testing.assert_close(got, ref)


def test_step_form_equals_the_causal_operator():
    """The cache holds the last max_len inputs; the output at t reads the filter at max_len."""
    filt, q, k, v = layer_inputs(n=30, max_len=48)
    with torch.no_grad():
        want = hyena_causal(q, k, v, filt(30), filt.skip)
        full_filter = filt(48)  # (h, d, L)
        cache, outs = torch.zeros(2, 2, 4, 48, dtype=torch.float64), []
        for t in range(30):
            y, cache = hyena_step(q[:, :, t], k[:, :, t], v[:, :, t], full_filter, filt.skip, cache)
            outs.append(y)
    torch.testing.assert_close(torch.stack(outs, dim=2), want)


def test_filter_for_n_is_the_start_of_the_filter_for_max_len():
    with torch.no_grad():
        causal = ImplicitFilter(2, 4, 48)
        assert torch.equal(causal(30), causal(48)[..., :30])
        two = ImplicitFilter(2, 4, 48, two_sided=True)
        assert two(30).shape == (2, 4, 59)
        torch.testing.assert_close(two(30), two(48)[..., 47 - 29 : 47 + 30])
        assert not torch.allclose(two(30)[..., 29:], two(30)[..., :30].flip(-1))  # not symmetric


def test_decay_window_reaches_its_target():
    """The fastest channel's window falls to 1e-2 at 30% of max_len, the slowest at 150%."""
    rates = decay_rates(8)
    torch.testing.assert_close(torch.exp(-rates[-1] * 0.3), torch.tensor(1e-2))
    torch.testing.assert_close(torch.exp(-rates[0] * 1.5), torch.tensor(1e-2))


def test_causal_form_is_causal_and_bidirectional_is_not():
    filt, q, k, v = layer_inputs()
    later = [t.clone() for t in (q, k, v)]
    for t in later:
        t[:, :, 20:] += 1.0
    with torch.no_grad():
        h = filt(30)
        causal = hyena_causal(q, k, v, h, filt.skip), hyena_causal(*later, h, filt.skip)
        filt2 = ImplicitFilter(2, 4, 48, two_sided=True).double()
        h2 = filt2(30)
        both = hyena_bidirectional(q, k, v, h2, filt2.skip), hyena_bidirectional(*later, h2, filt2.skip)
    # the FFT spreads rounding over every position, so equal to rounding, not bit for bit
    torch.testing.assert_close(causal[0][:, :, :20], causal[1][:, :, :20], atol=1e-12, rtol=0)
    assert not torch.allclose(causal[0][:, :, 20:], causal[1][:, :, 20:])
    assert not torch.allclose(both[0][:, :, :20], both[1][:, :, :20])


def test_end_padding_does_not_reach_real_positions():
    filt, q, k, v = layer_inputs(two_sided=True)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[:, 24:] = False
    with torch.no_grad():
        padded = hyena_bidirectional(q, k, v, filt(30), filt.skip, mask)[:, :, :24]
        trimmed = hyena_bidirectional(q[:, :, :24], k[:, :, :24], v[:, :, :24], filt(24), filt.skip)
    torch.testing.assert_close(padded, trimmed)


def fft_counts(shapes, *args, out_shape=None, **kwargs):
    """One real FFT per row of its input's last dim, by fft_flops."""
    rows = math.prod(shapes[:-1])
    return rows * fft_flops(shapes[-1])


def inverse_fft_counts(shapes, dim, normalization, last_dim_size, *args, out_shape=None, **kwargs):
    return math.prod(shapes[:-1]) * fft_flops(last_dim_size)


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("n, heads, d, order, inner", [(64, 2, 8, 16, 2), (50, 3, 4, 8, 1)])
def test_cost_counts_what_the_operator_does(two_sided, n, heads, d, order, inner):
    """FLOPs: the MLP's matmuls by FlopCounterMode, and each FFT it sees by fft_flops; activations
    by autograd's saved tensors; the decode state by the cache's bytes."""
    filt = ImplicitFilter(heads, d, 80, order=order, inner_layers=inner, two_sided=two_sided)
    q, k, v = (torch.randn(1, heads, n, d, requires_grad=True) for _ in range(3))
    op = hyena_bidirectional if two_sided else hyena_causal
    run = lambda: op(q, k, v, filt(n), filt.skip)
    extra = {torch.ops.aten._fft_r2c: fft_counts, torch.ops.aten._fft_c2r: inverse_fft_counts}
    assert hyena_flops(n, heads, d, 3, order, inner, two_sided) == pytest.approx(counted_flops(run, extra), rel=1e-12)
    held = (q, k, v, *filt.parameters(), *filt.buffers())
    assert hyena_activation_elements(n, heads, d, order, inner, two_sided) == saved_elements(run, held)
    if not two_sided:
        full_filter, cache = filt(80), torch.zeros(1, heads, d, 80)
        step = lambda: hyena_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], full_filter, filt.skip, cache)
        assert hyena_state_bytes(heads, d, 80) == step()[1].nbytes
        assert hyena_step_flops(heads, d, 80) == counted_flops(step)
