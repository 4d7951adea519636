"""The supernet under an architecture distribution (DARTS/GDAS) reduces to one arch when the
distribution is one-hot."""

import pytest
import torch

from nas.errors import ConfigError
from nas.model import ModelShape
from nas.space import LayerArch, SearchSpace
from nas.supernet import Supernet
from tests.helpers import SPACES


def one_hot_weights(space, arch):
    chosen = space.choices_of(arch)
    weights = {}
    for key, options in space.decisions().items():
        w = torch.zeros(len(options))
        # layers past depth are irrelevant: give them an arbitrary distribution
        if key in chosen:
            w[options.index(chosen[key])] = 1.0
        else:
            w = torch.softmax(torch.randn(len(options)), 0)
        weights[key] = w
    return weights


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
@pytest.mark.parametrize("hard", [False, True])
def test_one_hot_mixture_equals_the_arch(sharing, hard):
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(12, 3, 64), sharing=sharing).eval()
    tokens = torch.randint(1, 12, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, 30:] = False
    for seed in range(8):
        arch = space.sample(seed)
        with torch.no_grad():
            mixed = net.forward_mixed(tokens, one_hot_weights(space, arch), mask, hard=hard)
            torch.testing.assert_close(mixed, net(tokens, arch, mask), atol=1e-5, rtol=1e-5)


def test_soft_mixture_is_the_weighted_sum_for_a_linear_choice():
    """Mixing two FFN widths 50/50 equals the mean of the two archs' FFN outputs (depth 1)."""
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(12, 3, 64)).eval()
    x = torch.randn(2, 20, space.dim)
    ffn = net.blocks[0].ffn
    with torch.no_grad():
        mixed = ffn.forward_mixed(x, torch.tensor([0.5, 0.5]), space.ffn_dims)
        expected = 0.5 * ffn(x, space.ffn_dims[0]) + 0.5 * ffn(x, space.ffn_dims[1])
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_architecture_logit_in_hard_mode():
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    net = Supernet(space, ModelShape(12, 3, 64))
    logits = {k: torch.zeros(len(v), requires_grad=True) for k, v in space.decisions().items()}
    weights = {k: torch.nn.functional.gumbel_softmax(l, hard=True) for k, l in logits.items()}
    net.forward_mixed(torch.randint(1, 12, (2, 30)), weights, hard=True).sum().backward()
    depth = space.decisions()["depth"][int(weights["depth"].argmax())]
    for key, l in logits.items():
        if key == "depth" or int(key[5]) < depth:
            assert l.grad is not None and l.grad.abs().sum() > 0, key


def test_the_depth_gate_is_not_cancelled_by_the_readout_norm():
    """GDAS scales the chosen depth's output by its gate (1 forward); on the readout's input the
    LayerNorm would cancel it, leaving the depth logits only eps-sized gradients."""
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    net = Supernet(space, ModelShape(12, 3, 64))
    weights = {k: torch.nn.functional.one_hot(torch.tensor(0), len(v)).float() for k, v in space.decisions().items()}
    gate = torch.ones((), requires_grad=True)
    weights["depth"] = weights["depth"] * gate  # one-hot, the picked entry the gate itself
    out = net.forward_mixed(torch.randint(1, 12, (2, 30)), weights, hard=True)
    out.sum().backward()
    torch.testing.assert_close(gate.grad, out.detach().sum())  # d(sum(g * logits))/dg at g = 1


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
def test_partial_heads_match_a_direct_computation(sharing):
    """PC-DARTS K=2 on tiny (4 heads of 8): each candidate attends on heads 0-1 with its own
    weights; heads 2-3 pass their value projection; the head-count mask and the output
    projection follow. Written out with plain matmuls and the cores' own subnet forward."""
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(12, 3, 64), sharing=sharing).eval()
    attn = net.blocks[0].attn
    x = torch.randn(2, 20, space.dim)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    cand_w = torch.softmax(torch.randn(len(space.attention)), 0)
    heads_w = torch.tensor([0.3, 0.7])  # heads 2 or 4: heads 2-3 weigh 0.7, heads 0-1 weigh 1
    d = space.head_dim
    expected = 0
    with torch.no_grad():
        for cand, w in zip(attn.cores, cand_w):
            proj = attn.projections_of(cand)
            # the mixed half: the 2-head candidate as a standalone layer (the leading slices)
            two_heads = attn(x, mask, LayerArch(cand, 2, space.ffn_dims[0]))  # out(attn(heads 0-1))
            v = x @ proj["v"].weight.T + proj["v"].bias  # (b, n, 4*d)
            bypass = v[..., 2 * d :] * 0.7  # heads 2-3: values, masked by the 4-head weight
            expected = expected + w * (two_heads + bypass @ proj["out"].weight[:, 2 * d :].T)
        mixed = attn.forward_mixed(x, mask, cand_w, heads_w, space.heads, partial=2)
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)


def test_partial_must_divide_the_heads():
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    net = Supernet(space, ModelShape(12, 3, 64))
    weights = {k: torch.softmax(torch.zeros(len(v)), 0) for k, v in space.decisions().items()}
    with pytest.raises(ConfigError, match="partial=3"):
        net.forward_mixed(torch.randint(1, 12, (1, 8)), weights, partial=3)


def test_uniform_edge_weights_are_the_plain_residual():
    space = SearchSpace.from_yaml(SPACES / "tiny.yaml")
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(12, 3, 64)).eval()
    weights = {k: torch.softmax(torch.randn(len(v)), 0) for k, v in space.decisions().items()}
    tokens = torch.randint(1, 12, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(
            net.forward_mixed(tokens, weights, partial=2, edges=torch.ones(space.max_depth, 2)),
            net.forward_mixed(tokens, weights, partial=2),
        )
