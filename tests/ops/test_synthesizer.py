"""Synthesizer variants against references that build the n x n score matrix."""

import pytest
import torch

from nas.errors import ConfigError
from nas.ops.attention import build, make_core

H, N, D = 3, 29, 8


def inputs_and_mask():
    torch.manual_seed(1)
    q, v = torch.randn(2, H, N, D), torch.randn(2, H, N, D)
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[0, 20:] = False
    mask[1, 5:9] = False
    return q, v, mask


def softmax_reference(scores, v, mask):
    return scores.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(dim=-1) @ v


def test_dense_equals_reference():
    torch.manual_seed(0)
    core = make_core("synthesizer", D, H, 64, variant="dense")
    q, v, mask = inputs_and_mask()
    hidden = torch.relu(torch.einsum("bhnd,hde->bhne", q, core.w1) + core.b1[:, None, :])
    scores = hidden @ core.w2[:, :N].transpose(1, 2)  # (b, h, n, n)
    want = softmax_reference(scores, v, mask)
    torch.testing.assert_close(core(q, None, v, mask), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", [4, 8, 12, None])  # narrower, as wide as, wider than d
def test_random_equals_reference(rank):
    torch.manual_seed(0)
    core = make_core("synthesizer", D, H, 64, variant="random", rank=rank)
    _, v, mask = inputs_and_mask()
    scores = core.r[:, :N, :N] if rank is None else core.a[:, :N] @ core.b[:, :N].transpose(1, 2)
    want = softmax_reference(scores, v, mask)
    torch.testing.assert_close(core(None, None, v, mask), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rank", [4, None])
def test_random_reads_only_values_and_extracts_heads(rank):
    layer = build("synthesizer", 32, 4, max_len=64, variant="random", rank=rank)
    assert sorted(layer.proj) == ["v"]
    core = layer.core
    small = core.extract(2)
    assert small.num_params(2) == sum(p.numel() for p in small.parameters()) == core.num_params(2)
    v = torch.randn(1, 4, 20, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(None, None, v[:, :2]), core(None, None, v)[:, :2])


@pytest.mark.parametrize("rank", [4, None])
def test_random_gradients_reach_every_parameter(rank):
    """The registry tests build the dense variant only."""
    layer = build("synthesizer", 32, 4, max_len=64, variant="random", rank=rank)
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[1, 15:] = False
    layer(torch.randn(2, 21, 32), mask).square().sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"


def test_dense_reads_queries_and_values():
    assert sorted(build("synthesizer", 32, 4, max_len=64).proj) == ["q", "v"]


def test_bad_variant_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="variant must be one of dense, random; got 'sparse'"):
        build("synthesizer", 32, 4, max_len=64, variant="sparse")


@pytest.mark.parametrize(
    "options, cls, inputs",
    [
        ({"variant": "dense"}, "DenseSynthesizer", ("q", "v")),
        ({"variant": "random", "rank": None}, "RandomSynthesizer", ("v",)),
        ({"variant": "random", "rank": 4}, "FactorizedRandomSynthesizer", ("v",)),
    ],
)
def test_each_variant_is_a_class_with_fixed_capabilities(options, cls, inputs):
    import copy

    from nas.ops.attention import make_core

    core = make_core("synthesizer", 8, 2, 16, **options)
    assert type(core).__name__ == cls and core.name == "synthesizer"
    assert type(core).inputs == core.inputs == inputs  # the class says what an instance reads
    assert set(type(core).per_head) == {name for name, _ in core.named_parameters()}
    assert type(copy.deepcopy(core)) is type(core)
