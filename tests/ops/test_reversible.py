"""Reversible layers and the chunked feed-forward: the same numbers as plain autograd, for
every attention op of the registry, with less memory."""

import copy

import pytest
import torch
from torch import nn

from nas.model import ModelShape, ModelSpec, Subnet
from nas.ops.attention import ATTENTION
from nas.ops.chunked import chunked
from nas.ops.reversible import Coupling, coupled, reversible
from nas.peak_memory import PeakMemory
from nas.space import SearchSpace
from tests.ops.test_attention_registry import SMALL_OPTIONS

SHAPE = ModelShape(vocab_size=20, num_classes=5, max_len=64)


def space_of(op: str, reversible: bool = True, ffn_chunks: int = 3, depth: int = 3) -> SearchSpace:
    options = dict(SMALL_OPTIONS.get(op, {}))
    if op == "performer":
        options["redraw_every"] = 1  # a buffer that changes every training forward: replayed
    return SearchSpace.from_dict(
        {
            "name": "t",
            "dim": 16,
            "head_dim": 4,
            "depth": [depth],
            "layer": {"attention": {op: options}, "heads": [2], "ffn_dim": [32]},
            "memory": {"reversible": reversible, "ffn_chunks": ffn_chunks},
        }
    )


def batch(n=40):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, SHAPE.vocab_size, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - 9 :] = False
    return tokens, mask


def train_steps(model, steps=2):
    """Outputs and gradients of `steps` forward/backward passes (gradients accumulate)."""
    tokens, mask = batch()
    outs = []
    for step in range(steps):
        torch.manual_seed(step)  # the same random stream for both models
        out = model(tokens, mask)
        out.square().sum().backward()
        outs.append(out.detach())
    return outs, {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("op", ATTENTION.names())
def test_reversible_gradients_equal_stored_activations(op):
    """Recomputed in backward or stored, the same coupling gives the same gradients; two steps,
    so that a Performer redraws its features in the second forward and the replay must too."""
    torch.manual_seed(0)
    model = Subnet(ModelSpec(space_of(op).largest(), space_of(op), SHAPE)).train()
    stored = copy.deepcopy(model)
    stored.recompute = False
    outs, grads = train_steps(model)
    ref_outs, ref_grads = train_steps(stored)
    for out, ref in zip(outs, ref_outs):
        torch.testing.assert_close(out, ref, atol=0, rtol=0)  # the forward is the same code
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert (grad is None) == (ref_grads[name] is None), name
        if grad is not None:
            assert grad.abs().sum() > 0, name
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    for (name, buf), ref in zip(model.named_buffers(), stored.buffers()):
        assert torch.equal(buf, ref), name  # the recomputation left the buffers as the forward did


def test_reversible_is_the_coupling_of_the_paper():
    """y1 = x1 + f(x2), y2 = x2 + g(y1), written out for two layers of small linear maps."""
    torch.manual_seed(0)
    layers = [nn.ModuleDict({"f": nn.Linear(8, 8), "g": nn.Linear(8, 8)}) for _ in range(2)]
    couplings = [Coupling(m["f"], m["g"], m) for m in layers]
    x1, x2 = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 5, 8, requires_grad=True)
    y1, y2 = reversible(x1, x2, couplings)
    a1 = x1 + layers[0]["f"](x2)
    a2 = x2 + layers[0]["g"](a1)
    b1 = a1 + layers[1]["f"](a2)
    b2 = a2 + layers[1]["g"](b1)
    torch.testing.assert_close((y1, y2), (b1, b2))
    dy = tuple(torch.randn(2, 2, 5, 8))
    inputs = (x1, x2, *[p for m in layers for p in m.parameters()])
    grads = torch.autograd.grad((y1, y2), inputs, dy)
    ref = torch.autograd.grad((b1, b2), inputs, dy)
    for got, want in zip(grads, ref):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_dropout_replays_the_same_mask():
    """Random ops inside f and g draw the same numbers in the recomputation as in the forward."""
    torch.manual_seed(0)
    layers = [
        nn.ModuleDict(
            {"f": nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)), "g": nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5))}
        )
        for _ in range(3)
    ]
    couplings = [Coupling(m["f"], m["g"], m, g_chunks=2) for m in layers]
    x = torch.randn(2, 6, 8)
    grads = []
    for run in (reversible, coupled):
        for m in layers:
            m.zero_grad()
        torch.manual_seed(1)
        y1, y2 = run(x, x, couplings)
        (y1 * y2).sum().backward()
        grads.append([p.grad.clone() for m in layers for p in m.parameters()])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_random_state_after_backward_is_the_callers():
    layer = nn.ModuleDict({"f": nn.Dropout(0.5), "g": nn.Dropout(0.5)})
    x = torch.randn(2, 6, 8, requires_grad=True)
    torch.manual_seed(5)
    y1, y2 = reversible(x, x, [Coupling(layer["f"], layer["g"], layer)])
    expected = torch.rand(3)
    torch.manual_seed(5)
    y1, y2 = reversible(x, x, [Coupling(layer["f"], layer["g"], layer)])
    (y1 + y2).sum().backward()
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("chunks", [1, 3, 4, 50])  # 50 > n: some pieces are empty
def test_chunked_ffn_equals_the_unchunked(chunks):
    torch.manual_seed(0)
    ffn = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
    x = torch.randn(2, 37, 16, requires_grad=True)
    dy = torch.randn(2, 37, 16)
    params = (x, *ffn.parameters())
    whole = ffn(x)
    want = torch.autograd.grad(whole, params, dy)
    for recompute in (False, True):
        out = chunked(ffn, x, chunks, recompute)
        torch.testing.assert_close(out, whole, atol=1e-6, rtol=1e-6)
        for got, ref in zip(torch.autograd.grad(out, params, dy), want):
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def ffn_peak(chunks: int, recompute: bool) -> int:
    """Peak bytes of a forward and backward through a wide FFN (hidden units dominate)."""
    torch.manual_seed(0)
    ffn = nn.Sequential(nn.Linear(8, 1024), nn.GELU(), nn.Linear(1024, 8))
    x = torch.randn(1, 1024, 8, requires_grad=True)
    with PeakMemory() as memory:
        chunked(ffn, x, chunks, recompute).sum().backward()
    return memory.peak


def test_chunked_ffn_divides_the_peak_by_the_chunk_count():
    whole = ffn_peak(1, recompute=True)
    assert whole >= 2 * 1024 * 1024 * 4  # at least two (n, hidden) tensors at once
    for chunks in (2, 4, 8):
        assert ffn_peak(chunks, recompute=True) <= whole / chunks * 1.15
    # Without recomputation the graph keeps every piece's hidden units: no saving in training.
    assert ffn_peak(4, recompute=False) >= whole / 2


def test_peak_memory_sees_every_allocation():
    with PeakMemory() as memory:
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(500)  # 2000 bytes
        del a
        c = torch.empty(2000)  # 8000 bytes, after a was freed
        view = c[:10]  # no new storage
    assert memory.peak == 10000 and memory.current == 10000
    del b, c, view
    assert memory.current == 0


def test_recomputation_runs_under_the_forwards_autocast():
    """Mixed precision (bf16 autocast, as Lightning's bf16-mixed): backward runs outside the
    autocast block, so the recomputation must re-enter it to compute what the forward did."""
    torch.manual_seed(0)
    model = Subnet(ModelSpec(space_of("full").largest(), space_of("full"), SHAPE)).train()
    stored = copy.deepcopy(model)
    stored.recompute = False
    tokens, mask = batch()
    for m in (model, stored):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(tokens, mask)
        out.float().square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), stored.parameters()):
        assert (p.grad - q.grad).abs().max() <= 0.02 * q.grad.abs().max(), name
