"""The gated delta rule's chunked WY/UT form against flash-linear-attention's recurrence, its own
step form and a plain backward recurrence; its cost against counting."""

import pytest
import torch
from torch.nn import functional as F

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
from tests.ops.mixers.counting import counted_flops, grads, saved_elements
from tests.ops.mixers.reference import fla


def inputs(b=2, h=3, n=75, dk=8, dv=6, dtype=torch.float32, seed=0):
    """q, k (L2-normalised), v, log decays g and write rates beta, from the paper's gates."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, dk, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(b, h, n, dk, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(b, h, n, dv, generator=gen, dtype=dtype)
    a, b_ = (torch.randn(b, h, n, generator=gen, dtype=dtype) for _ in range(2))
    g, beta = gated_delta_gates(a, b_, torch.rand(h, generator=gen, dtype=dtype), torch.zeros(h, dtype=dtype))
    return q, k, v, g, beta


def leaves(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


def test_equals_fla_recurrence_outputs_state_and_gradients():
    """n = 75 with chunks of 32: two whole chunks and a padded one, from a nonzero state."""
    naive = fla("ops/gated_delta_rule/naive.py")
    ours = leaves(*inputs())
    theirs = leaves(*ours)
    state0 = torch.randn(2, 3, 8, 6) * 0.3
    o, state = gated_delta_chunked(*ours, chunk=32, state=state0)
    q, k, v, g, beta = (x.transpose(1, 2) for x in theirs)
    ref, ref_state = naive.naive_recurrent_gated_delta_rule(
        q, k, v, beta, g, initial_state=state0, output_final_state=True
    )
    ref = ref.transpose(1, 2)
    torch.testing.assert_close(o, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(state, ref_state, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads(o, ours), grads(ref, theirs)):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


def test_chunked_equals_its_own_step_recurrence():
    """In float64, to rounding, including a cut mid-sequence with the state carried over."""
    q, k, v, g, beta = inputs(n=41, dtype=torch.float64)
    state0 = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    o, state = gated_delta_chunked(q, k, v, g, beta, chunk=16, state=state0)
    step_state, outs = state0, []
    for t in range(41):
        y, step_state = gated_delta_step(q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t], beta[:, :, t], step_state)
        outs.append(y)
    torch.testing.assert_close(o, torch.stack(outs, dim=2), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, step_state, atol=1e-10, rtol=1e-10)
    cut = [x[:, :, :19] for x in (q, k, v, g, beta)], [x[:, :, 19:] for x in (q, k, v, g, beta)]
    head, mid = gated_delta_chunked(*cut[0], chunk=16, state=state0)
    tail, end = gated_delta_chunked(*cut[1], chunk=16, state=mid)
    torch.testing.assert_close(torch.cat([head, tail], dim=2), o, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(end, state, atol=1e-10, rtol=1e-10)


def backward_reference(q, k, v, g, beta):
    """The delta-rule recurrence run from the end, written out: o_t = S^T q_t scale with S the memory
    of positions > t; each position decays S and writes to it as in the forward rule."""
    b, h, n, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    out = torch.zeros_like(v)
    for t in reversed(range(n)):
        out[:, :, t] = torch.einsum("bhk,bhkv->bhv", q[:, :, t] * dk**-0.5, state)
        state = state * g[:, :, t].exp()[..., None, None]
        error = v[:, :, t] - torch.einsum("bhk,bhkv->bhv", k[:, :, t], state)
        state = state + torch.einsum("bhk,bhv->bhkv", k[:, :, t], beta[:, :, t, None] * error)
    return out


def test_bidirectional_is_forward_plus_the_backward_recurrence():
    q, k, v, g, beta = inputs(n=37, dtype=torch.float64)
    got = gated_delta_bidirectional(q, k, v, g, beta, chunk=16)
    want = gated_delta_chunked(q, k, v, g, beta, chunk=16)[0] + backward_reference(q, k, v, g, beta)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    g_back = g.flip(0)
    got = gated_delta_bidirectional(q, k, v, g, beta, chunk=16, g_backward=g_back)
    want = gated_delta_chunked(q, k, v, g, beta, chunk=16)[0] + backward_reference(q, k, v, g_back, beta)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_causal_form_is_causal():
    q, k, v, g, beta = inputs(n=40, dtype=torch.float64)
    later = [x.clone() for x in (q, k, v, g, beta)]
    later[2][:, :, 25:] += 1.0
    later[4][:, :, 25:] = 0.9
    causal = gated_delta_chunked(q, k, v, g, beta, chunk=16)[0], gated_delta_chunked(*later, chunk=16)[0]
    assert torch.equal(causal[0][:, :, :25], causal[1][:, :, :25])
    assert not torch.allclose(causal[0][:, :, 25:], causal[1][:, :, 25:])
    both = gated_delta_bidirectional(q, k, v, g, beta, chunk=16), gated_delta_bidirectional(*later, chunk=16)
    assert not torch.allclose(both[0][:, :, :25], both[1][:, :, :25])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_positions_are_as_if_absent(bidirectional):
    q, k, v, g, beta = inputs(b=1, n=30, dtype=torch.float64)
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, 10:14] = mask[0, 26:] = False
    run = gated_delta_bidirectional if bidirectional else lambda *x, **kw: gated_delta_chunked(*x, **kw)[0]
    padded = run(q, k, v, g, beta, chunk=8, mask=mask)[:, :, mask[0]]
    trimmed = run(*(x[:, :, mask[0]] for x in (q, k, v, g, beta)), chunk=8)
    torch.testing.assert_close(padded, trimmed, atol=1e-10, rtol=1e-10)


def solve_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """A unit lower-triangular solve: c (c - 1) / 2 multiply-adds per right-hand column."""
    c, columns = b_shape[-2], b_shape[-1]
    batch = 1
    for size in b_shape[:-2]:
        batch *= size
    return batch * c * (c - 1) * columns


@pytest.mark.parametrize("n, chunk", [(128, 32), (100, 64), (20, 64)])
def test_cost_counts_what_the_chunked_form_does(n, chunk):
    h, dk, dv = 2, 16, 8
    q, k, v, g, beta = leaves(*inputs(b=1, h=h, n=n, dk=dk, dv=dv))
    run = lambda: gated_delta_chunked(q, k, v, g, beta, chunk=chunk)
    counted = counted_flops(run, {torch.ops.aten.linalg_solve_triangular: solve_flops})
    assert gated_delta_flops(n, h, dk, dv, chunk) == counted
    assert gated_delta_activation_elements(n, h, dk, dv, chunk) == saved_elements(run, (q, k, v, g, beta))
    first = [x[:, :, 0] for x in (q, k, v, g, beta)]
    step = lambda: gated_delta_step(*first, torch.zeros(1, h, dk, dv))
    assert gated_delta_state_bytes(h, dk, dv) == step()[1].nbytes
    assert gated_delta_step_flops(h, dk, dv) == counted_flops(step)
