"""Gated linear attention and retention against flash-linear-attention's recurrences, a dense
bidirectional reference, and their own step form; their cost against counting."""

import pytest
import torch

from nas.ops.mixers.gla import (
    gla_activation_elements,
    gla_bidirectional,
    gla_chunked,
    gla_flops,
    gla_gate,
    gla_state_bytes,
    gla_step,
    gla_step_flops,
    retention_log_decay,
)
from tests.ops.mixers.counting import counted_flops, grads, saved_elements
from tests.ops.mixers.reference import fla


def inputs(b=2, h=3, n=75, dk=8, dv=6, per_dim=True, dtype=torch.float32, seed=0, strength=1.0):
    """q, k, v and log gates; `strength` scales the gate logits (large: decays far from 1)."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, n, dk, generator=gen, dtype=dtype) for _ in range(2))
    v = torch.randn(b, h, n, dv, generator=gen, dtype=dtype)
    logits = torch.randn(b, h, n, *((dk,) if per_dim else ()), generator=gen, dtype=dtype) * strength
    return q, k, v, gla_gate(logits, normalizer=1.0)


def bthd(*xs):
    """fla's layout: (b, t, h, ...)."""
    return [x.transpose(1, 2) for x in xs]


def leaves(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


@pytest.mark.parametrize("strength", [1.0, 8.0])
def test_per_dim_gates_equal_fla_recurrence_outputs_state_and_gradients(strength):
    """n = 75 is no multiple of the chunk (32) and covers several sub-chunks (8); strength 8 drives
    gates towards log decays of -20 per step, where the sub-chunking keeps every factor <= 1."""
    naive = fla("ops/gla/naive.py")
    ours = leaves(*inputs(strength=strength))
    theirs = leaves(*ours)
    state0 = torch.randn(2, 3, 8, 6)
    o, state = gla_chunked(*ours, chunk=32, sub_chunk=8, state=state0)
    ref, ref_state = naive.naive_recurrent_gla(*bthd(*theirs), initial_state=state0, output_final_state=True)
    torch.testing.assert_close(o, ref.transpose(1, 2), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(state, ref_state, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads(o, ours), grads(ref.transpose(1, 2), theirs)):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


def test_scalar_gates_equal_fla_simple_gla_recurrence_and_gradients():
    naive = fla("ops/simple_gla/naive.py")
    ours = leaves(*inputs(per_dim=False))
    theirs = leaves(*ours)
    o, state = gla_chunked(*ours, chunk=16)
    ref, ref_state = naive.naive_recurrent_simple_gla(*bthd(*theirs), output_final_state=True)
    torch.testing.assert_close(o, ref.transpose(1, 2), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(state, ref_state, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads(o, ours), grads(ref.transpose(1, 2), theirs)):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


def test_fixed_decay_is_retnet_retention():
    """decay: fixed gives each head RetNet's constant decay 1 - 2^(-5-h)."""
    naive = fla("ops/retention/naive.py")
    q, k, v, _ = leaves(*inputs(h=4))
    g = retention_log_decay(4)[:, None].expand(2, 4, 75)  # (b, h, n)
    o, _ = gla_chunked(q, k, v, g, chunk=32)
    ref = naive.naive_retention(q, k, v)
    torch.testing.assert_close(o, ref, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads(o, [q, k, v]), grads(ref, [q, k, v])):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("per_dim", [True, False])
def test_chunked_equals_its_own_step_recurrence(per_dim):
    """In float64, to rounding: the chunked form from a state equals gla_step token by token, and
    cutting the sequence anywhere and carrying the state changes nothing."""
    q, k, v, g = inputs(n=41, per_dim=per_dim, dtype=torch.float64)
    state0 = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    o, state = gla_chunked(q, k, v, g, chunk=16, sub_chunk=4, state=state0)
    step_state, outs = state0, []
    for t in range(41):
        y, step_state = gla_step(q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t], step_state)
        outs.append(y)
    torch.testing.assert_close(o, torch.stack(outs, dim=2), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, step_state, atol=1e-10, rtol=1e-10)
    head, mid = gla_chunked(q[:, :, :19], k[:, :, :19], v[:, :, :19], g[:, :, :19], chunk=16, sub_chunk=4, state=state0)
    tail, end = gla_chunked(q[:, :, 19:], k[:, :, 19:], v[:, :, 19:], g[:, :, 19:], chunk=16, sub_chunk=4, state=mid)
    torch.testing.assert_close(torch.cat([head, tail], dim=2), o, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(end, state, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("per_dim", [True, False])
def test_causal_form_is_causal_and_bidirectional_is_not(per_dim):
    q, k, v, g = inputs(n=40, per_dim=per_dim, dtype=torch.float64)
    later = [x.clone() for x in (q, k, v)] + [g.clone()]
    for x in later[:3]:
        x[:, :, 25:] = torch.randn_like(x[:, :, 25:])
    later[3][:, :, 25:] = -torch.rand_like(g[:, :, 25:])
    causal = gla_chunked(q, k, v, g, chunk=16, sub_chunk=4)[0], gla_chunked(*later, chunk=16, sub_chunk=4)[0]
    assert torch.equal(causal[0][:, :, :25], causal[1][:, :, :25])
    assert not torch.allclose(causal[0][:, :, 25:], causal[1][:, :, 25:])
    both = gla_bidirectional(q, k, v, g, chunk=16, sub_chunk=4), gla_bidirectional(*later, chunk=16, sub_chunk=4)
    assert not torch.allclose(both[0][:, :, :25], both[1][:, :, :25])


def dense_bidirectional(q, k, v, g):
    """o_t = sum_s q_t k_s w_ts v_s over every s, from the explicit (n, n, dk) weights: forward
    exp(g_{s+1} + ... + g_t) for s <= t, backward exp(g_{t+1} + ... + g_{s-1}) for s > t."""
    n = q.shape[2]
    g = g if g.dim() == 4 else g[..., None].expand_as(q)
    G = torch.cat([torch.zeros_like(g[:, :, :1]), g.cumsum(2)], dim=2)  # G[i] = g_0 + ... + g_{i-1}
    t, s = torch.arange(n)[:, None], torch.arange(n)[None, :]
    upper = torch.where(s <= t, t + 1, s)  # forward: G[t+1] - G[s+1]; backward: G[s] - G[t+1]
    lower = torch.where(s <= t, s + 1, t + 1)
    weights = (G[:, :, upper] - G[:, :, lower]).exp()  # (b, h, n, n, dk)
    scores = torch.einsum("bhtd,bhsd,bhtsd->bhts", q * q.shape[-1] ** -0.5, k, weights)
    return scores @ v


@pytest.mark.parametrize("per_dim", [True, False])
def test_bidirectional_equals_dense_reference(per_dim):
    q, k, v, g = inputs(n=37, per_dim=per_dim, dtype=torch.float64)
    got = gla_bidirectional(q, k, v, g, chunk=16, sub_chunk=4)
    torch.testing.assert_close(got, dense_bidirectional(q, k, v, g), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("form", ["causal", "bidirectional"])
def test_padded_positions_are_as_if_absent(form):
    """A masked position neither writes nor decays: the real positions' outputs equal those of the
    sequence with the padding removed (a gap in the middle and padding at the end)."""
    q, k, v, g = inputs(b=1, n=30, dtype=torch.float64)
    mask = torch.ones(1, 30, dtype=torch.bool)
    mask[0, 10:14] = mask[0, 26:] = False
    run = lambda *x, mask=None: (
        gla_chunked(*x, chunk=8, sub_chunk=4, mask=mask)[0]
        if form == "causal"
        else gla_bidirectional(*x, chunk=8, sub_chunk=4, mask=mask)
    )
    padded = run(q, k, v, g, mask=mask)[:, :, mask[0]]
    trimmed = run(*(x[:, :, mask[0]] for x in (q, k, v, g)))
    torch.testing.assert_close(padded, trimmed, atol=1e-10, rtol=1e-10)


def test_gate_is_the_papers_normalised_sigmoid():
    logits = torch.randn(5)
    torch.testing.assert_close(gla_gate(logits).exp(), torch.sigmoid(logits) ** (1 / 16))
    assert torch.allclose(retention_log_decay(3).exp(), torch.tensor([1 - 2**-5, 1 - 2**-6, 1 - 2**-7]))


@pytest.mark.parametrize("per_dim", [True, False])
@pytest.mark.parametrize("n, chunk, sub_chunk", [(128, 32, 8), (100, 64, 16), (20, 64, 8)])
def test_cost_counts_what_the_chunked_form_does(per_dim, n, chunk, sub_chunk):
    """FLOPs: the matmuls FlopCounterMode counts, plus the within-sub-chunk products it does not
    see (a multiply-add per key dim for each of the u (u + 1) / 2 pairs). Activations: the
    elements autograd saves. Decode state: the step's state tensor."""
    h, dk, dv = 2, 16, 8
    q, k, v, g = leaves(*inputs(b=1, h=h, n=n, dk=dk, dv=dv, per_dim=per_dim))
    run = lambda: gla_chunked(q, k, v, g, chunk=chunk, sub_chunk=sub_chunk)
    c = min(chunk, -(-n // sub_chunk) * sub_chunk)
    u = min(sub_chunk, c)
    within = h * (-(-n // c)) * (c // u) * 2 * (u * (u + 1) // 2) * dk if per_dim else 0
    assert gla_flops(n, h, dk, dv, chunk, sub_chunk, per_dim) == counted_flops(run) + within
    assert gla_activation_elements(n, h, dk, dv, chunk, sub_chunk, per_dim) == saved_elements(run, (q, k, v, g))
    step = lambda: gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], torch.zeros(1, h, dk, dv))
    assert gla_state_bytes(h, dk, dv) == step()[1].nbytes
    assert gla_step_flops(h, dk, dv) == counted_flops(step)


def test_memory_is_linear_in_length():
    """Twice the length keeps twice the elements (to a constant), not four times."""
    for per_dim in (True, False):
        short, long = (gla_activation_elements(n, 4, 64, 64, 64, 16, per_dim) for n in (4096, 8192))
        assert long == pytest.approx(2 * short, rel=1e-6)
