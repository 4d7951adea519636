"""The supernet under an architecture distribution (DARTS/GDAS) reduces to one arch when the
distribution is one-hot."""
from pathlib import Path

import pytest
import torch

from nas.model import ModelShape
from nas.space import SearchSpace
from nas.supernet import Supernet

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


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
