"""A space's memory options (reversible layers, chunked feed-forward) through the supernet:
extract equivalence, recomputed gradients, the mixtures, and training memory flat in depth."""

import copy

import pytest
import torch

from nas.model import ModelShape, ModelSpec, Subnet
from nas.peak_memory import PeakMemory
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import Supernet
from tests.helpers import SPACES
from tests.supernet.test_mixed import one_hot_weights

VOCAB, CLASSES, MAX_LEN, N = 20, 5, 96, 90
SHAPE = ModelShape(VOCAB, CLASSES, MAX_LEN)
MEMORY = {"reversible": True, "ffn_chunks": 4}


def with_memory(name: str, **memory) -> SearchSpace:
    data = SearchSpace.from_yaml(SPACES / f"{name}.yaml").to_dict()
    return SearchSpace.from_dict({**data, "memory": memory or MEMORY})


def batch(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - 23 :] = False
    return tokens, mask


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
def test_extracted_subnet_equals_supernet_with_memory_options(sharing):
    space = with_memory("lra")
    torch.manual_seed(0)
    net = Supernet(space, SHAPE, sharing=sharing)
    tokens, mask = batch()
    for seed in range(6):
        arch = space.sample(seed)
        sub = net.extract(arch)
        assert sub.reversible and all(block.ffn_chunks == 4 for block in sub.blocks)
        for train in (False, True):  # eval runs the plain coupling, training the recomputing one
            net.train(train), sub.train(train)
            torch.testing.assert_close(sub(tokens, mask), net(tokens, arch, mask), atol=1e-5, rtol=1e-5)


def test_supernet_recomputed_gradients_equal_stored_ones():
    space = with_memory("lra")
    torch.manual_seed(0)
    net = Supernet(space, SHAPE).train()
    stored = copy.deepcopy(net)
    stored.recompute = False
    tokens, mask = batch()
    arch = Arch(
        4,
        (
            LayerArch("performer", 4, 256),
            LayerArch("lsh", 2, 512),
            LayerArch("block_recurrent", 4, 128),
            LayerArch("local_global", 2, 256),
        ),
    )
    for model in (net, stored):
        torch.manual_seed(1)
        model(tokens, arch, mask).square().sum().backward()
    used = 0
    for (name, p), q in zip(net.named_parameters(), stored.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            used += 1
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert used > 20


@pytest.mark.parametrize("hard", [False, True])
def test_one_hot_mixture_equals_the_reversible_arch(hard):
    space = with_memory("tiny")
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(12, 3, 64)).eval()
    tokens = torch.randint(1, 12, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, 30:] = False
    for seed in range(6):
        arch = space.sample(seed)
        with torch.no_grad():
            mixed = net.forward_mixed(tokens, one_hot_weights(space, arch), mask, hard=hard)
            torch.testing.assert_close(mixed, net(tokens, arch, mask), atol=1e-5, rtol=1e-5)


def test_reversible_differs_from_the_plain_residual():
    """The option changes the model (a coupled pair), not only how it is trained."""
    torch.manual_seed(0)
    plain = Subnet(
        ModelSpec(
            SearchSpace.from_yaml(SPACES / "tiny.yaml").largest(),
            SearchSpace.from_yaml(SPACES / "tiny.yaml"),
            ModelShape(12, 3, 64),
        )
    ).eval()
    rev = Subnet(ModelSpec(plain.spec.arch, with_memory("tiny"), ModelShape(12, 3, 64))).eval()
    rev.load_state_dict(plain.state_dict())
    tokens = torch.randint(1, 12, (2, 40))
    with torch.no_grad():
        assert not torch.allclose(rev(tokens), plain(tokens), atol=1e-3)


def training_peak(depth: int, reversible: bool, n: int = 256) -> int:
    space = SearchSpace.from_dict(
        {
            "name": "m",
            "dim": 32,
            "head_dim": 8,
            "depth": [depth],
            "layer": {"attention": {"local": {"window": 32}}, "heads": [4], "ffn_dim": [128]},
            "memory": {"reversible": reversible},
        }
    )
    torch.manual_seed(0)
    model = Subnet(ModelSpec(space.largest(), space, ModelShape(VOCAB, CLASSES, n))).train()
    tokens = torch.randint(1, VOCAB, (2, n))
    with PeakMemory() as memory:
        model(tokens).sum().backward()
    grads = sum(p.numel() * 4 for p in model.parameters())
    return memory.peak - grads  # activations (and temporaries), not the gradients


def test_reversible_training_memory_is_flat_in_depth():
    plain = [training_peak(d, False) for d in (2, 4, 8)]
    rev = [training_peak(d, True) for d in (2, 4, 8)]
    assert plain[2] > 3 * plain[0]  # stored activations grow with depth
    assert rev[2] < 1.1 * rev[0]  # what grows is per-layer bookkeeping, not (n, D) activations
    assert rev[2] < plain[2] / 3
