"""Mamba-2's chunked SSD against the state-space recurrence written out step by step (fla-core has
no plain-PyTorch SSD), its step form with the short convolution, its bidirectional form; its cost
against counting."""

import math

import pytest
import torch
from torch.nn import functional as F

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
    ssd_bidirectional,
    ssd_chunked,
    ssd_flops,
    ssd_step,
)
from nas.ops.mixers.short_conv import centered_conv
from tests.ops.mixers.counting import counted_flops, grads, saved_elements


def inputs(b=2, h=3, n=75, p=6, N=8, groups=None, dtype=torch.float32, seed=0):
    """x, dt, A, B, C, D as Mamba-2 makes them; B, C shared by the heads when groups=1."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, n, p, generator=gen, dtype=dtype)
    dt = mamba2_dt(torch.randn(b, h, n, generator=gen, dtype=dtype), init_dt_bias(h).to(dtype) + 2)
    A = -torch.exp(init_A_log(h)).to(dtype) / 4
    B, C = (torch.randn(b, groups or h, n, N, generator=gen, dtype=dtype) for _ in range(2))
    return x, dt, A, B, C, torch.randn(h, generator=gen, dtype=dtype)


def ssd_reference(x, dt, A, B, C, D, state=None):
    """h_t = exp(A dt_t) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t + D x_t, one position at a time."""
    b, h, n, p = x.shape
    B, C = B.expand(-1, h, -1, -1), C.expand(-1, h, -1, -1)
    hidden = x.new_zeros(b, h, B.shape[-1], p) if state is None else state
    ys = []
    for t in range(n):
        decay = torch.exp(A * dt[:, :, t])[..., None, None]  # (b, h, 1, 1)
        hidden = decay * hidden + torch.einsum("bh,bhn,bhp->bhnp", dt[:, :, t], B[:, :, t], x[:, :, t])
        ys.append(torch.einsum("bhn,bhnp->bhp", C[:, :, t], hidden) + D[:, None] * x[:, :, t])
    return torch.stack(ys, dim=2), hidden


def leaves(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


@pytest.mark.parametrize("groups", [None, 1])
def test_chunked_ssd_equals_the_recurrence_outputs_state_and_gradients(groups):
    ours = leaves(*inputs(groups=groups))
    theirs = leaves(*ours)
    state0 = torch.randn(2, 3, 8, 6)
    y, state = ssd_chunked(*ours, chunk=32, state=state0)
    ref, ref_state = ssd_reference(*theirs, state=state0)
    torch.testing.assert_close(y, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(state, ref_state, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads(y, ours), grads(ref, theirs)):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_chunked_ssd_equals_its_own_step_form():
    x, dt, A, B, C, D = inputs(n=41, dtype=torch.float64)
    y, state = ssd_chunked(x, dt, A, B, C, D, chunk=16)
    hidden, ys = torch.zeros(2, 3, 8, 6, dtype=torch.float64), []
    for t in range(41):
        out, hidden = ssd_step(x[:, :, t], dt[:, :, t], A, B[:, :, t], C[:, :, t], D, hidden)
        ys.append(out)
    torch.testing.assert_close(y, torch.stack(ys, dim=2), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, hidden, atol=1e-10, rtol=1e-10)


def conv_params(h=3, p=6, N=8, w=4, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(h, p + 2 * N, w, generator=gen, dtype=dtype), torch.randn(
        h, p + 2 * N, generator=gen, dtype=dtype
    )


def test_prefill_then_decode_equals_the_whole_sequence():
    """mamba2_causal over 23 tokens hands its state (SSM and the convolution's last inputs) to
    mamba2_step, which continues token by token: equal to mamba2_causal over all 41."""
    x, dt, A, B, C, D = inputs(n=41, dtype=torch.float64)
    weight, bias = conv_params()
    whole, end = mamba2_causal(x, B, C, dt, A, D, weight, bias, chunk=16)
    head, state = mamba2_causal(x[:, :, :23], B[:, :, :23], C[:, :, :23], dt[:, :, :23], A, D, weight, bias, chunk=16)
    outs = [head]
    for t in range(23, 41):
        y, state = mamba2_step(x[:, :, t], B[:, :, t], C[:, :, t], dt[:, :, t], A, D, weight, bias, state)
        outs.append(y[:, :, None])
    torch.testing.assert_close(torch.cat(outs, dim=2), whole, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state.ssm, end.ssm, atol=1e-10, rtol=1e-10)
    assert torch.equal(state.conv, end.conv)


def test_mamba2_layer_is_the_convolution_then_the_recurrence():
    """Against PyTorch's own Conv1d (causal: padded by w - 1 and cut, as Mamba does) and SiLU,
    then the written-out SSD recurrence."""
    x, dt, A, B, C, D = inputs(n=30, dtype=torch.float64)
    weight, bias = conv_params()
    conv = torch.nn.Conv1d(3 * 22, 3 * 22, 4, groups=3 * 22, padding=3, dtype=torch.float64)
    conv.weight.data, conv.bias.data = weight.reshape(66, 1, 4), bias.reshape(66)
    xBC = torch.cat([x, B, C], dim=-1).transpose(-1, -2).reshape(2, 66, 30)  # (b, h (p + 2N), n)
    xBC = F.silu(conv(xBC)[..., :30]).view(2, 3, 22, 30).transpose(-1, -2)
    want, _ = ssd_reference(xBC[..., :6], dt, A, xBC[..., 6:14], xBC[..., 14:], D)
    got, _ = mamba2_causal(x, B, C, dt, A, D, weight, bias, chunk=16)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def ssd_backward_reference(x, dt, A, B, C):
    """The SSD recurrence from the end: y_t = C_t^T h with h the state of positions > t."""
    b, h, n, p = x.shape
    hidden = x.new_zeros(b, h, B.shape[-1], p)
    ys = torch.zeros_like(x)
    for t in reversed(range(n)):
        ys[:, :, t] = torch.einsum("bhn,bhnp->bhp", C[:, :, t], hidden)
        decay = torch.exp(A * dt[:, :, t])[..., None, None]
        hidden = decay * hidden + torch.einsum("bh,bhn,bhp->bhnp", dt[:, :, t], B[:, :, t], x[:, :, t])
    return ys


def test_bidirectional_is_forward_plus_the_backward_recurrence():
    x, dt, A, B, C, D = inputs(n=37, dtype=torch.float64)
    dt_back = dt.flip(0)
    got = ssd_bidirectional(x, dt, A, B, C, D, chunk=16, dt_backward=dt_back)
    want = ssd_reference(x, dt, A, B, C, D)[0] + ssd_backward_reference(x, dt_back, A, B, C)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    weight, bias = conv_params()
    xBC = F.silu(centered_conv(torch.cat([x, B, C], dim=-1), weight, bias))
    x_, B_, C_ = xBC[..., :6], xBC[..., 6:14], xBC[..., 14:]
    want = ssd_reference(x_, dt, A, B_, C_, D)[0] + ssd_backward_reference(x_, dt, A, B_, C_)
    torch.testing.assert_close(mamba2_bidirectional(x, B, C, dt, A, D, weight, bias, chunk=16), want)


def test_causal_form_is_causal_and_bidirectional_is_not():
    x, dt, A, B, C, D = inputs(n=40, dtype=torch.float64)
    weight, bias = conv_params()
    later = [t.clone() for t in (x, B, C, dt)]
    for t in later:
        t[:, :, 25:] = t[:, :, 25:].abs() + 0.5
    causal = (
        mamba2_causal(x, B, C, dt, A, D, weight, bias, chunk=16)[0],
        mamba2_causal(later[0], later[1], later[2], later[3], A, D, weight, bias, chunk=16)[0],
    )
    assert torch.equal(causal[0][:, :, :25], causal[1][:, :, :25])
    assert not torch.allclose(causal[0][:, :, 25:], causal[1][:, :, 25:])
    both = (
        mamba2_bidirectional(x, B, C, dt, A, D, weight, bias, chunk=16),
        mamba2_bidirectional(later[0], later[1], later[2], later[3], A, D, weight, bias, chunk=16),
    )
    assert not torch.allclose(both[0][:, :, :25], both[1][:, :, :25])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_positions_are_as_if_absent_in_the_ssd(bidirectional):
    x, dt, A, B, C, D = inputs(b=1, n=30, dtype=torch.float64)
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, 10:14] = mask[0, 26:] = False
    run = ssd_bidirectional if bidirectional else lambda *a, **kw: ssd_chunked(*a, **kw)[0]
    padded = run(x, dt, A, B, C, D, chunk=8, mask=mask)[:, :, mask[0]]
    trimmed = run(*(t[:, :, mask[0]] for t in (x, dt)), A, *(t[:, :, mask[0]] for t in (B, C)), D, chunk=8)
    torch.testing.assert_close(padded, trimmed, atol=1e-10, rtol=1e-10)


def test_initialisation_follows_mamba2():
    dt = F.softplus(init_dt_bias(1000))
    assert 1e-3 * 0.999 <= dt.min() and dt.max() <= 0.1 * 1.001
    assert abs(dt.log().mean() - (math.log(1e-3) + math.log(0.1)) / 2) < 0.2  # log-uniform
    A = -init_A_log(1000).exp()
    assert -16 <= A.min() and A.max() <= -1


@pytest.mark.parametrize("n, chunk", [(128, 32), (100, 64), (20, 64)])
def test_cost_counts_what_the_layer_does(n, chunk):
    """FLOPs by FlopCounterMode (matmuls and the convolution), activations by autograd's saved
    tensors, the decode state by Mamba2State's bytes."""
    h, p, N, w = 2, 8, 16, 4
    x, dt, A, B, C, D = leaves(*inputs(b=1, h=h, n=n, p=p, N=N))
    weight, bias = (t.float().requires_grad_() for t in conv_params(h, p, N, w))
    ssd = lambda: ssd_chunked(x, dt, A, B, C, None, chunk=chunk)
    layer = lambda: mamba2_causal(x, B, C, dt, A, None, weight, bias, chunk=chunk)
    assert ssd_flops(n, h, p, N, chunk) == counted_flops(ssd)
    assert mamba2_flops(n, h, p, N, w, chunk) == counted_flops(layer)
    assert ssd_activation_elements(n, h, p, N, chunk) == saved_elements(ssd, (x, dt, A, B, C))
    assert mamba2_activation_elements(n, h, p, N, w, chunk) == saved_elements(layer, (x, dt, A, B, C, weight, bias))
    state = Mamba2State(torch.zeros(1, h, N, p), torch.zeros(1, h, p + 2 * N, w - 1))
    step = lambda: mamba2_step(x[:, :, 0], B[:, :, 0], C[:, :, 0], dt[:, :, 0], A, None, weight, bias, state)
    assert mamba2_state_bytes(h, p, N, w) == sum(t.nbytes for t in step()[1])
    assert mamba2_step_flops(h, p, N, w) == counted_flops(step)
