"""Block-recurrent attention against a plain token-by-token loop of the recurrence, full and local
attention, and PyTorch's FLOP counter."""

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas import cost
from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec
from nas.ops.attention import build, make_core
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import Supernet

CONFIGS = [(gate, update) for gate in ("fixed", "lstm") for update in ("single", "skip")]


def attend_one(query, keys, values):
    """softmax(query . keys / sqrt(d)) values for one query, written out."""
    scores = torch.stack([query @ key for key in keys]) / math.sqrt(query.shape[0])
    weights = torch.exp(scores - scores.max().detach())
    return (weights[:, None] * values).sum(0) / weights.sum()


def attend_rows(queries, keys, values):
    return torch.stack([attend_one(row, keys, values) for row in queries])


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def loop_reference(core, q, k, v, mask, causal=False):
    """The recurrence as the paper describes it, one batch row, head, block and token at a time.

    Block t's tokens see their window (causal: its left half) and the state entering block t;
    then, if the block holds a real token, the state attends to itself and to the block's real
    tokens and is gated.
    """
    cfg, params = core.config, dict(core.named_parameters())
    b, h, n, d = q.shape
    c = min(cfg.window, n)
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            p = {name: value[hi] for name, value in params.items()}
            state = p["state0"]  # (s, d)
            for t in range(math.ceil(n / c)):
                centred = state - state.mean(-1, keepdim=True)
                normed = centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-5)
                x = normed + p["state_pos"]
                w = p["state_proj"]
                s_query, s_key, s_value, s_query2 = (x @ w[:, j * d : (j + 1) * d] for j in range(4))
                block = range(t * c, min((t + 1) * c, n))
                for i in block:
                    near = [j for j in range(n) if abs(i - j) <= cfg.window // 2 and (j <= i or not causal)]
                    window = [j for j in near if mask[bi, j]]  # empty for some padded causal queries: free rows
                    local = attend_one(q[bi, hi, i], k[bi, hi, window], v[bi, hi, window]) if window else 0
                    out[bi, hi, i] = local + attend_one(q[bi, hi, i], s_key, s_value)
                seen = [j for j in block if mask[bi, j]]
                if t == math.ceil(n / c) - 1 or not seen:
                    continue
                own = attend_rows(s_query, s_key, s_value)
                read = attend_rows(s_query2, k[bi, hi, seen], v[bi, hi, seen])
                both = torch.cat([own, read], dim=-1)  # (s, 2d)
                if cfg.update == "single":
                    hidden = torch.relu(both @ p["w1"] + p["b1"])
                    z = torch.tanh(hidden @ p["w2"] + p["b2"])
                else:
                    hidden = both
                    z = both @ p["w_out"] + p["b_out"]
                if cfg.gate == "fixed":
                    g = sigmoid(p["gate_bias"])
                    state = g * state + (1 - g) * z
                else:
                    input_gate = sigmoid(hidden @ p["w_gate"][:, :d] + p["b_gate"][:d] - 1)
                    forget_gate = sigmoid(hidden @ p["w_gate"][:, d:] + p["b_gate"][d:] + 1)
                    state = forget_gate * state + input_gate * z
    return out


def inputs(b=2, h=2, n=37, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, n - 4 :] = False  # padding at the end
    mask[-1, 3] = mask[-1, 16:24] = False  # a gap, and with blocks of 8 a block of padding in the middle
    return q, k, v, mask


@pytest.mark.parametrize("gate, update", CONFIGS)
def test_equals_the_loop_reference_and_its_gradients(gate, update):
    torch.manual_seed(0)
    core = make_core("block_recurrent", 8, 2, 64, window=8, states=3, gate=gate, update=update).double()
    q, k, v, mask = inputs()  # 37 tokens: 5 blocks of 8, the last one padded
    got, want = core(q, k, v, mask), loop_reference(core, q, k, v, mask)
    real = mask[:, None, :].expand(-1, 2, -1)  # (b, h, n): rows of padded queries are free
    torch.testing.assert_close(got[real], want[real], atol=1e-10, rtol=1e-10)

    weights = torch.randn(got.shape, dtype=got.dtype) * real[..., None]
    grads = [torch.autograd.grad((out * weights).sum(), list(core.parameters())) for out in (got, want)]
    for name, a, b in zip(dict(core.named_parameters()), *grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("gate, update", CONFIGS)
def test_causal_form_equals_the_loop_reference(gate, update):
    """The paper's causal form: the left half of the window, and the state entering the block."""
    torch.manual_seed(0)
    core = make_core("block_recurrent", 8, 2, 64, causal=True, window=8, states=3, gate=gate, update=update).double()
    q, k, v, mask = inputs()
    got, want = core(q, k, v, mask), loop_reference(core, q, k, v, mask, causal=True)
    real = mask[:, None, :].expand(-1, 2, -1)
    torch.testing.assert_close(got[real], want[real], atol=1e-10, rtol=1e-10)


def test_gradcheck():
    torch.manual_seed(0)
    core = make_core("block_recurrent", 4, 2, 16, window=4, states=2, gate="lstm").double()
    q, k, v, mask = inputs(b=1, n=11, d=4, seed=1)
    real = mask[:, None, :, None].double()  # padded queries' rows are free: leave them out
    assert torch.autograd.gradcheck(lambda *qkv: core(*qkv, mask) * real, [t.requires_grad_() for t in (q, k, v)])


def test_state_switched_off_is_local_and_covering_window_is_full():
    """With the state's values zero the op is `local`; a window covering the sequence makes that full."""
    torch.manual_seed(0)
    full = build("full", 32, 4, max_len=64).eval()
    recurrent = build("block_recurrent", 32, 4, max_len=64, window=128, states=4).eval()
    recurrent.load_state_dict(full.state_dict(), strict=False)  # the shared projections
    x = torch.randn(2, 50, 32)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 31:] = False
    with torch.no_grad():
        recurrent.core.state_proj[:, :, 16:24] = 0  # the state's values (d = 8)
        torch.testing.assert_close(recurrent(x, mask), full(x, mask), atol=1e-5, rtol=1e-5)

    core = make_core("block_recurrent", 8, 2, 64, window=6, states=4)
    local = make_core("local", 8, 2, 64, window=6)
    q, k, v, mask = inputs(dtype=torch.float32)
    with torch.no_grad():
        core.state_proj[:, :, 16:24] = 0
        torch.testing.assert_close(core(q, k, v, mask), local(q, k, v, mask), atol=1e-6, rtol=1e-6)


def test_state_carries_information_forward_only():
    """Tokens past every window still see the first block through the state; the first block sees
    nothing of the last."""
    torch.manual_seed(0)
    core = make_core("block_recurrent", 8, 2, 64, window=8, states=4)
    q, k, v, _ = inputs(b=1, n=40, dtype=torch.float32)  # no mask: 5 full blocks
    first, last = slice(0, 8), slice(32, 40)
    with torch.no_grad():
        base = core(q, k, v)
        for part, same, changed in ((first, slice(0, 0), slice(16, 40)), (last, slice(0, 28), slice(32, 40))):
            k2, v2 = k.clone(), v.clone()
            k2[:, :, part] += 1
            v2[:, :, part] += 1
            other = core(q, k2, v2)
            torch.testing.assert_close(other[:, :, same], base[:, :, same])
            assert (other[:, :, changed] - base[:, :, changed]).abs().sum(dim=-1).gt(1e-6).all()


@pytest.mark.parametrize("gate, update", CONFIGS)
def test_flops_match_pytorchs_flop_counter(gate, update):
    core = make_core("block_recurrent", 16, 2, 512, window=64, states=16, gate=gate, update=update)
    q, k, v = (torch.randn(1, 2, 300, 16) for _ in range(3))  # 5 blocks, the last padded
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        core(q, k, v)
    assert core.flops(300, 2) == pytest.approx(counter.get_total_flops(), rel=0.05)


@pytest.mark.parametrize("gate, update", CONFIGS)
def test_causal_flops_match_pytorchs_flop_counter(gate, update):
    core = make_core("block_recurrent", 16, 2, 512, causal=True, window=64, states=16, gate=gate, update=update)
    q, k, v = (torch.randn(1, 2, 300, 16) for _ in range(3))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        core(q, k, v)
    assert core.flops(300, 2) == pytest.approx(counter.get_total_flops(), rel=0.05)


def test_cost_is_linear_in_length():
    core = make_core("block_recurrent", 16, 2, 8192, window=64, states=16)
    for measure in (core.flops, core.activation_elements):
        assert measure(8192, 2) == pytest.approx(2 * measure(4096, 2), rel=0.01)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"gate": "gru"}, "gate must be one of fixed, lstm; got 'gru'"),
        ({"update": "dual"}, "update must be one of single, skip; got 'dual'"),
        ({"states": 0}, "states must be >= 1, got 0"),
        ({"window": 1}, "window must be >= 2, got 1"),
    ],
)
def test_bad_options_name_the_field(options, message):
    with pytest.raises(ConfigError, match=f"attention 'block_recurrent': {message}"):
        make_core("block_recurrent", 8, 2, 64, **options)


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
def test_supernet_extract_equals_supernet_with_fewer_heads(sharing):
    """Each head's state, projections and gates are sliced with the heads: a 2-head subnet cut out
    of a 4-head supernet gives the supernet's output, and holds the parameters the cost model counts."""
    space = SearchSpace.from_dict(
        {
            "name": "recurrent",
            "dim": 32,
            "head_dim": 8,
            "depth": [2],
            "layer": {
                "attention": {
                    "fixed": {"type": "block_recurrent", "window": 8, "states": 4},
                    "lstm": {"type": "block_recurrent", "window": 6, "states": 3, "gate": "lstm", "update": "skip"},
                },
                "heads": [2, 4],
                "ffn_dim": [32],
            },
        }
    )
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(20, 3, 64), sharing=sharing).eval()
    tokens = torch.randint(1, 20, (2, 45))
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 30:] = False
    for arch in (
        Arch(2, (LayerArch("fixed", 2, 32), LayerArch("lstm", 4, 32))),
        Arch(2, (LayerArch("lstm", 2, 32), LayerArch("fixed", 2, 32))),
    ):
        sub = net.extract(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(sub(tokens, mask), net(tokens, arch, mask), atol=1e-5, rtol=1e-5)
        shape = ModelShape(20, 3, 64)
        assert sum(p.numel() for p in sub.parameters()) == cost.params(ModelSpec(arch, space, shape))
