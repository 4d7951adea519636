"""Weight sharing: an extracted subnet is the supernet's arch, exactly, and independent of it."""

import pytest
import torch

from nas import cost
from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec
from nas.space import Arch, LayerArch
from nas.supernet import SHARING, FewShotSupernet, Supernet, sort_by_importance
from tests.helpers import load_space

VOCAB, CLASSES, MAX_LEN, N = 20, 5, 160, 150
SHAPE = ModelShape(VOCAB, CLASSES, MAX_LEN)


@pytest.fixture(scope="module")
def lra():
    return load_space("lra")


def batch(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (2, n), generator=g)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - 37 :] = False  # the second sequence is padded
    return tokens, mask


def perturb(module, seed, scale=0.1):
    """Make copies that started equal differ, so a test can tell them apart."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def mechanism(space, name):
    """A supernet under each sharing mechanism, with non-trivial mechanism weights."""
    if name in SHARING:
        net = Supernet(space, SHAPE, sharing=name)
        if name == "entangled_gain":  # gains start at 1: move them so that folding them is tested
            for i, block in enumerate(net.blocks):
                perturb(block.attn.gains, i, scale=0.5)
        return net
    if name == "few_shot":
        net = FewShotSupernet(Supernet(space, SHAPE), "layer0.attention")
        for k, sub in enumerate(net.subnets):
            perturb(sub, k)
        return net
    assert name == "importance_sorted"
    net = Supernet(space, SHAPE, sharing="separate")
    perturb(net, 5, scale=0.2)  # random init is exchangeable; make importance differ per head/unit
    sort_by_importance(net)
    return net


MECHANISMS = [*SHARING, "few_shot", "importance_sorted"]


@pytest.mark.parametrize("sharing", MECHANISMS)
def test_extracted_subnet_equals_supernet_on_20_archs(lra, sharing):
    torch.manual_seed(0)
    net = mechanism(lra, sharing).eval()
    shape = SHAPE
    tokens, mask = batch()
    for seed in range(20):
        arch = lra.sample(seed)
        sub = net.extract(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(sub(tokens, mask), net(tokens, arch, mask), atol=1e-5, rtol=1e-5)
        assert sum(p.numel() for p in sub.parameters()) == cost.params(ModelSpec(arch, lra, shape))


def hybrid_archs(space, samples=3):
    """Each candidate once, in layer 0 beside the next one in layer 1, then random archs."""
    names = list(space.attention)
    paired = [Arch(2, (LayerArch(a, 4, 128), LayerArch(b, 2, 512))) for a, b in zip(names, names[1:] + names[:1])]
    return paired + [space.sample(seed) for seed in range(samples)]


@pytest.mark.parametrize("sharing", MECHANISMS)
def test_extracted_subnet_equals_supernet_on_the_hybrid_space(sharing):
    """The linear-recurrent and convolutional mixers beside attention, under every mechanism: under
    `entangled` they read the Q/K/V/O that attention reads, under `separate` their own."""
    space = load_space("hybrid")
    torch.manual_seed(0)
    net = mechanism(space, sharing).eval()
    tokens, mask = batch()
    for arch in hybrid_archs(space):
        sub = net.extract(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(sub(tokens, mask), net(tokens, arch, mask), atol=1e-5, rtol=1e-5)
        assert sum(p.numel() for p in sub.parameters()) == cost.params(ModelSpec(arch, space, SHAPE))


def test_training_the_subnet_leaves_the_supernet_alone(lra):
    torch.manual_seed(0)
    net = Supernet(lra, SHAPE)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sub = net.extract(lra.largest())
    tokens, mask = batch()
    opt = torch.optim.SGD(sub.parameters(), lr=1.0)
    torch.nn.functional.cross_entropy(sub(tokens, mask), torch.tensor([1, 2])).backward()
    opt.step()
    assert any(
        not torch.equal(a, b)
        for a, b in zip(sub.state_dict().values(), net.extract(lra.largest()).state_dict().values())
    )
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"supernet weight {k} changed"


def test_heads_and_ffn_use_leading_slices(lra):
    """A 2-head layer with 128 FFN units is the 4-head layer with 512 units whose last two
    heads' output columns and last 384 units' output columns are zeroed."""
    torch.manual_seed(0)
    net = Supernet(lra, SHAPE).eval()
    small = Arch(2, (LayerArch("full", 2, 128),) * 2)
    big = Arch(2, (LayerArch("full", 4, 512),) * 2)
    tokens, mask = batch()
    with torch.no_grad():
        expected = net(tokens, small, mask)
        for block in net.blocks[:2]:
            block.attn.projections["shared"]["out"].weight[:, 2 * lra.head_dim :] = 0
        assert not torch.allclose(net(tokens, big, mask), expected, atol=1e-3)  # the extra units still count
        for block in net.blocks[:2]:
            block.ffn.fc2.weight[:, 128:] = 0
        torch.testing.assert_close(net(tokens, big, mask), expected, atol=1e-5, rtol=1e-5)


def test_entangled_shares_projections_and_separate_does_not(lra):
    entangled = Supernet(lra, SHAPE, sharing="entangled")
    separate = Supernet(lra, SHAPE, sharing="separate")
    assert list(entangled.blocks[0].attn.projections) == ["shared"]
    assert set(separate.blocks[0].attn.projections) == set(lra.attention)
    assert sum(p.numel() for p in separate.parameters()) > sum(p.numel() for p in entangled.parameters())


def test_token_head_gives_one_output_per_position(lra):
    net = Supernet(lra, ModelShape(VOCAB, CLASSES, MAX_LEN, "tokens"))
    tokens, mask = batch()
    arch = lra.sample(1)
    assert net(tokens, arch, mask).shape == (2, N, CLASSES)
    torch.testing.assert_close(
        net.extract(arch).eval()(tokens, mask), net.eval()(tokens, arch, mask), atol=1e-5, rtol=1e-5
    )


def test_bad_input(lra):
    net = Supernet(lra, SHAPE)
    tokens, _ = batch()
    with pytest.raises(ConfigError, match="depth 8 is not in space 'lra'; allowed: 2, 4, 6"):
        net(tokens, Arch(8, (LayerArch("full", 2, 128),) * 8))
    with pytest.raises(ConfigError, match="sequence length 161 exceeds the model's max_len 160"):
        net(torch.ones(1, 161, dtype=torch.long), lra.smallest())
    with pytest.raises(ConfigError, match="unknown sharing 'some'; allowed: entangled, separate, entangled_gain"):
        Supernet(lra, SHAPE, sharing="some")
