"""The mixer ops (gla, RetNet's retention as gla's fixed decay, gated_deltanet, mamba2, hyena) as a
layer computes them from the shared q/k/v and the op's own gates: against flash-linear-attention's
recurrences (outputs and gradients) and written-out references (Mamba-2's state-space recurrence
after PyTorch's Conv1d, Hyena's direct convolution), in the causal form and the bidirectional one
(the causal recurrence plus a recurrence from the end that reads positions > t); chunk sizes that
change nothing; their cost against counting; and the supernet's mixture running them all."""

import math

import pytest
import torch
from torch.nn import functional as F

from nas.model import ModelShape
from nas.ops.attention import make_core
from nas.space import Arch, LayerArch
from nas.supernet import Supernet
from tests.helpers import load_space
from tests.ops.mixers.counting import counted_flops, saved_elements
from tests.ops.mixers.reference import fla
from tests.ops.mixers.test_gated_deltanet import solve_flops
from tests.ops.mixers.test_hyena import fft_counts, inverse_fft_counts
from tests.ops.mixers.test_mamba2 import ssd_backward_reference, ssd_reference

B, H, N, D, MAX_LEN = 2, 3, 37, 8, 48  # N spans several chunks of 8 and is no multiple of them
OPS = {  # small chunks, so that N spans several
    "gla": {"chunk": 8, "sub_chunk": 4},
    "gla_conv": {"type": "gla", "chunk": 8, "sub_chunk": 4, "short_conv": 4},
    "retnet": {"type": "gla", "decay": "fixed", "chunk": 8},
    "gated_deltanet": {"chunk": 8},  # with the paper's short convolution
    "gated_deltanet_noconv": {"type": "gated_deltanet", "chunk": 8, "short_conv": 0},
    "mamba2": {"chunk": 8},
    "hyena": {},
}
COUNTS = {  # the non-matmul work FlopCounterMode counts with these formulas (as the mixers' tests do)
    torch.ops.aten.linalg_solve_triangular: solve_flops,
    torch.ops.aten._fft_r2c: fft_counts,
    torch.ops.aten._fft_c2r: inverse_fft_counts,
}


def core(candidate, causal, seed=0, **changes):
    options = {**OPS[candidate], **changes}
    torch.manual_seed(seed)
    return make_core(options.pop("type", candidate), D, H, MAX_LEN, causal=causal, **options)


def qkv(seed=1, n=N):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g).requires_grad_() for _ in range(3)]


def bthd(*xs):
    return [x.transpose(1, 2) for x in xs]


def norm(y):
    return F.rms_norm(y, (y.shape[-1],))


# -- the backward recurrences: the memory of positions > t, built from the end -------------------
def gla_from_the_end(q, k, v, g):
    """o_t = q_t S / sqrt(d) with S the memory of positions > t; g per key dim (b, h, n, d)."""
    memory, out = q.new_zeros(B, H, D, D), []
    for t in reversed(range(q.shape[2])):
        out.append((q[:, :, t, None] * D**-0.5 @ memory).squeeze(2))
        memory = g[:, :, t, :, None].exp() * memory + k[:, :, t, :, None] * v[:, :, t, None, :]
    return torch.stack(out[::-1], 2)


def delta_rule_from_the_end(q, k, v, g, beta):
    memory, out = q.new_zeros(B, H, D, D), []
    for t in reversed(range(q.shape[2])):
        out.append((q[:, :, t, None] * D**-0.5 @ memory).squeeze(2))
        memory = g[:, :, t, None, None].exp() * memory
        held = (k[:, :, t, None] @ memory).squeeze(2)  # (b, h, d): what the memory holds for k_t
        memory = memory + k[:, :, t, :, None] * (beta[:, :, t, None] * (v[:, :, t] - held))[:, :, None]
    return torch.stack(out[::-1], 2)


# -- each op's reference, from its parameters as the papers write the gates -----------------------
def gla_reference(op, q, k, v):
    naive = fla("ops/gla/naive.py")
    g = F.logsigmoid(k @ op.gate_weight + op.gate_bias[:, None]) / 16  # alpha = sigmoid(.)^(1/16)
    q, k, v = qkv_conv(op, q, k, v)
    forward = naive.naive_recurrent_gla(*bthd(q, k, v, g))[0].transpose(1, 2)
    return norm(forward if op.causal else forward + gla_from_the_end(q, k, v, g))


def retnet_reference(op, q, k, v):
    forward = fla("ops/retention/naive.py").naive_retention(q, k, v)  # RetNet's decays 1 - 2^(-5-h), its own
    if op.causal:
        return norm(forward)
    g = torch.log1p(-(2.0 ** (-5.0 - torch.arange(H))))[:, None, None].expand(B, H, q.shape[2], D)
    return norm(forward + gla_from_the_end(q, k, v, g))


def gated_deltanet_reference(op, q, k, v):
    naive = fla("ops/gated_delta_rule/naive.py")
    a, b = (k @ op.gate_weight).unbind(-1)
    g = -op.A_log.exp()[:, None] * F.softplus(a + op.dt_bias[:, None])  # Mamba-2's decay
    beta = torch.sigmoid(b)
    q, k, v = qkv_conv(op, q, k, v)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    forward = naive.naive_recurrent_gated_delta_rule(*bthd(q, k, v, beta, g))[0].transpose(1, 2)
    return norm(forward if op.causal else forward + delta_rule_from_the_end(q, k, v, g, beta))


def short_conv(op, x, weight=None, bias=None):
    """PyTorch's depthwise Conv1d over (b, h, n, c) per head and channel: causal (padded by w - 1 and
    cut, as Mamba does) or centred (padding='same'); the op's conv_weight and conv_bias unless given."""
    b, h, n, c = x.shape
    weight, bias = (op.conv_weight, op.conv_bias) if weight is None else (weight, bias)
    w = weight.shape[-1]
    weight, bias = weight.reshape(h * c, 1, w), bias.reshape(h * c)
    flat = x.transpose(-1, -2).reshape(b, h * c, n)
    y = F.conv1d(flat, weight, bias, padding=w - 1, groups=h * c)[..., :n] if op.causal else None
    if not op.causal:
        y = F.conv1d(F.pad(flat, ((w - 1) // 2, w // 2)), weight, bias, groups=h * c)
    return y.view(b, h, c, n).transpose(-1, -2)


def qkv_conv(op, q, k, v):
    """The `short_conv` option: Conv1d and SiLU over q, k, v (fla's ShortConvolution); as given without it."""
    if op.conv is None:
        return q, k, v
    return F.silu(short_conv(op, torch.cat([q, k, v], -1), op.conv.weight, op.conv.bias)).split(D, -1)


def mamba2_reference(op, q, k, v):
    x, B_, C = F.silu(short_conv(op, torch.cat([v, k, q], -1))).split(D, -1)  # Mamba-2: x, B, C
    dt = F.softplus(torch.einsum("bhnd,hd->bhn", v, op.dt_weight) + op.dt_bias[:, None])
    A = -op.A_log.exp()
    forward = ssd_reference(x, dt, A, B_, C, op.D)[0]
    return norm(forward if op.causal else forward + ssd_backward_reference(x, dt, A, B_, C))


def hyena_reference(op, q, k, v):
    """q (sum_s h_{t-s} k_s v_s + skip k_t v_t) by the direct sum over s (<= t causal; every s else)."""
    q, k, v = short_conv(op, torch.cat([q, k, v], -1)).split(D, -1)
    n = q.shape[2]
    u = k * v
    lag = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # (t, s): t - s
    h = op.filter(n)  # (h, d, n) at lags 0 .. n-1, or (h, d, 2n - 1) at lags -(n-1) .. n-1
    toeplitz = h[..., lag.clamp(min=0)] * (lag >= 0) if op.causal else h[..., lag + n - 1]  # (h, d, t, s)
    return q * (torch.einsum("hdts,bhsd->bhtd", toeplitz, u) + op.filter.skip[:, None] * u)


REFERENCES = {
    "gla": gla_reference,
    "gla_conv": gla_reference,
    "retnet": retnet_reference,
    "gated_deltanet": gated_deltanet_reference,
    "gated_deltanet_noconv": gated_deltanet_reference,
    "mamba2": mamba2_reference,
    "hyena": hyena_reference,
}


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("candidate", list(OPS))
def test_op_equals_its_reference_outputs_and_gradients(candidate, causal):
    op = core(candidate, causal)
    q, k, v = qkv()
    got, want = op(q, k, v), REFERENCES[candidate](op, q, k, v)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    leaves = [q, k, v, *op.parameters()]
    weight = torch.randn(got.shape, generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.grad((got * weight).sum(), leaves)
    theirs = torch.autograd.grad((want * weight).sum(), leaves, allow_unused=True)
    for (name, _), a, b in zip([("q", 0), ("k", 0), ("v", 0), *op.named_parameters()], ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda text, name=name: f"{name}: {text}")


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("candidate", ["gla", "retnet", "gated_deltanet", "mamba2"])
def test_the_chunk_size_changes_nothing(candidate, causal):
    """Chunks of 8 (with sub-chunks of 4) and one chunk for the whole sequence, from the same weights."""
    small = core(candidate, causal)
    whole = core(candidate, causal, seed=1, chunk=64, **({"sub_chunk": 16} if candidate == "gla" else {}))
    whole.load_state_dict(small.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(small(*qkv()), whole(*qkv()), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("candidate", ["gla_conv", "gated_deltanet"])
def test_the_short_convolution_reads_no_padding_and_slices_by_head(candidate, causal):
    """Junk after the real tokens, masked, reaches none of them through the window; a core
    extracted for fewer heads keeps those heads' convolution."""
    op = core(candidate, causal).eval()
    q, k, v = (x.detach() for x in qkv())
    junk = [torch.cat([x, 5 * torch.randn(B, H, 6, D)], dim=2) for x in (q, k, v)]
    mask = torch.ones(B, N + 6, dtype=torch.bool)
    mask[:, N:] = False
    with torch.no_grad():
        whole = op(q, k, v)
        torch.testing.assert_close(op(*junk, mask)[:, :, :N], whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(op.extract(2)(q[:, :2], k[:, :2], v[:, :2]), whole[:, :2], atol=1e-5, rtol=1e-5)


def within_sub_chunks(op, n):
    """GLA's within-sub-chunk products, elementwise (FlopCounterMode does not see them): a
    multiply-add per key dim for each of a sub-chunk's u (u + 1) / 2 pairs."""
    if op.name != "gla" or not op.per_dim:
        return 0
    c = min(op.config.chunk, -(-n // op.config.sub_chunk) * op.config.sub_chunk)
    u = min(op.config.sub_chunk, c)
    return H * (-(-n // c)) * (c // u) * 2 * (u * (u + 1) // 2) * D * (1 if op.causal else 2)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("candidate", list(OPS))
def test_cost_counts_what_the_op_does(candidate, causal):
    """FLOPs exactly as counted (the mixers' formulas for what the counter does not see); the step's
    FLOPs too; activations within 30% of what autograd saves (an estimate: elementwise temporaries
    and padding are not all counted)."""
    op = core(candidate, causal)
    q, k, v = (x[:1].detach().requires_grad_() for x in qkv())  # one sequence, as the cost model counts
    counted = counted_flops(lambda: op(q, k, v), COUNTS) + within_sub_chunks(op, N)
    assert op.flops(N, H) == pytest.approx(counted, abs=0.5)  # Hyena's FFT counts are fractional
    saved = saved_elements(lambda: op(q, k, v), (q, k, v, *op.parameters(), *op.buffers()))
    assert 0.75 * saved <= op.activation_elements(N, H) <= 1.3 * saved
    if causal:
        state = op.init_state(1, H, MAX_LEN)
        at = [x[:, :, :1].detach() for x in (q, k, v)]
        with torch.no_grad():
            assert op.step_flops(MAX_LEN, H) == counted_flops(lambda: op.step(*at, state, torch.tensor(5)))


def test_retention_decays_are_retnets_and_follow_their_heads():
    op = core("retnet", causal=True)
    torch.testing.assert_close(op.log_decay.exp(), 1 - 2.0 ** (-5.0 - torch.arange(H)))
    small = op.extract(2)
    assert dict(small.named_buffers()).keys() == {"log_decay"} and not list(small.parameters())
    assert torch.equal(small.log_decay, op.log_decay[:2])


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
def test_the_mixture_runs_every_mixer_beside_attention(sharing):
    """DARTS's mixture over the causal hybrid space: every candidate's own parameters get a gradient;
    under `entangled` the mixers read attention's Q/K/V/O, under `separate` their own."""
    space = load_space("hybrid_lm")
    shape = ModelShape(32, 32, 64, "tokens", causal=True)
    torch.manual_seed(0)
    net = Supernet(space, shape, sharing=sharing)
    attn = net.blocks[0].attn
    shared = [attn.projections_of(c) is attn.projections_of("full") for c in ("gla", "mamba2", "hyena")]
    assert shared == [sharing == "entangled"] * 3
    weights = {key: torch.softmax(torch.randn(len(c)), 0) for key, c in space.decisions().items()}
    tokens = torch.randint(1, 32, (2, 40))
    net.forward_mixed(tokens, weights).square().mean().backward()
    for mixer in ("gla", "retnet", "gated_deltanet", "mamba2", "hyena"):
        for name, p in attn.cores[mixer].named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{mixer}.{name}"
    arch = Arch(2, (LayerArch("mamba2", 4, 256), LayerArch("full", 2, 128)))
    assert net(tokens, arch).shape == (2, 40, 32)


def test_hyena_decodes_with_the_filter_init_state_computed():
    """The step reads the filter `init_state` computed, which training drops again."""
    op = core("hyena", causal=True).eval()
    state = op.init_state(B, H, MAX_LEN)
    assert op.decode_filter is not None and torch.equal(op.decode_filter, op.filter(MAX_LEN))
    q, k, v = (x[:, :, :1].detach() for x in qkv())
    with torch.no_grad():
        cached = op.step(q, k, v, state, torch.tensor(0))[0]
        op.train()
        assert op.decode_filter is None
        torch.testing.assert_close(op.step(q, k, v, state, torch.tensor(0))[0], cached)  # computed afresh
    assert math.isclose(op.state_elements(MAX_LEN, H), sum(x.numel() for x in state) / B)
