"""Sharing mechanisms do what they claim: few-shot routing and copies, importance sorting that
keeps the widest arch's function, per-type gains that isolate attention types."""

import pytest
import torch

from nas.errors import ConfigError
from nas.ops.mixers.gla import retention_log_decay
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import FewShotSupernet, Supernet, sort_by_importance, split_keys
from nas.supernet.importance import head_importance, unit_importance
from tests.helpers import SPACES, load_space

from .test_supernet import SHAPE, batch, perturb


@pytest.fixture(scope="module")
def lra():
    return SearchSpace.from_yaml(SPACES / "lra.yaml")


def uniform(op, heads=4, ffn=512, depth=2):
    return Arch(depth, (LayerArch(op, heads, ffn),) * depth)


# -- few-shot ---------------------------------------------------------------------------------
def test_few_shot_copies_start_equal_to_the_parent(lra):
    parent = Supernet(lra, SHAPE)
    net = FewShotSupernet(parent, "layer0.attention")
    assert len(net.subnets) == len(lra.attention)
    for sub in net.subnets:
        assert sub is not parent
        for (name, a), b in zip(parent.state_dict().items(), sub.state_dict().values()):
            assert torch.equal(a, b), name


def test_few_shot_routes_each_arch_to_its_sub_supernet(lra):
    torch.manual_seed(0)
    net = FewShotSupernet(Supernet(lra, SHAPE), "layer0.attention").eval()
    for k, sub in enumerate(net.subnets):
        perturb(sub, k)
    tokens, mask = batch()
    for seed in range(10):
        arch = lra.sample(seed)
        k = net.route(arch)
        assert net.choices[k] == arch.layers[0].attention
        with torch.no_grad():
            out = net(tokens, arch, mask)
            torch.testing.assert_close(out, net.subnets[k](tokens, arch, mask), rtol=0, atol=0)
            other = net.subnets[(k + 1) % len(net.subnets)](tokens, arch, mask)
            assert not torch.allclose(out, other)  # a different sub-supernet would score it differently
            torch.testing.assert_close(net.extract(arch).eval()(tokens, mask), out, atol=1e-5, rtol=1e-5)


def test_few_shot_training_an_arch_moves_only_its_sub_supernet(lra):
    net = FewShotSupernet(Supernet(lra, SHAPE), "depth")
    before = [{k: v.clone() for k, v in sub.state_dict().items()} for sub in net.subnets]
    arch = uniform("performer", depth=4)
    tokens, mask = batch()
    torch.optim.SGD(net.parameters(), lr=0.1).zero_grad()
    torch.nn.functional.cross_entropy(net(tokens, arch, mask), torch.tensor([1, 2])).backward()
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    changed = [
        any(not torch.equal(v, before[i][k]) for k, v in sub.state_dict().items()) for i, sub in enumerate(net.subnets)
    ]
    assert changed == [d == 4 for d in lra.depths]


def test_few_shot_bad_input(lra):
    assert split_keys(lra)[:3] == ("depth", "layer0.attention", "layer0.heads")
    assert "layer2.attention" not in split_keys(lra)  # depth-2 archs have no layer 2
    with pytest.raises(ConfigError, match="cannot split on 'layer2.attention'; allowed: depth, layer0.attention"):
        FewShotSupernet(Supernet(lra, SHAPE), "layer2.attention")
    net = FewShotSupernet(Supernet(lra, SHAPE), "depth")
    with pytest.raises(ConfigError, match="use a sampling strategy"):
        net.forward_mixed(None, {})


# -- importance sorting ----------------------------------------------------------------------
@pytest.mark.parametrize("sharing", ["entangled", "separate", "entangled_gain"])
def test_sorting_keeps_the_widest_arch_of_every_type_and_puts_important_first(lra, sharing):
    torch.manual_seed(0)
    # float64: a permutation reorders the sums, so float32 would differ by rounding alone
    net = Supernet(lra, SHAPE, sharing=sharing).eval()
    perturb(net, 3, scale=0.2)
    net.double()
    tokens, mask = batch()
    archs = [uniform(op, depth=6) for op in lra.attention]
    with torch.no_grad():
        before = [net(tokens, a, mask) for a in archs]
        small_before = net(tokens, uniform("full", heads=2, ffn=128, depth=6), mask)
    orders = sort_by_importance(net)
    assert any(order != sorted(order) for order in orders.values())  # something moved
    with torch.no_grad():
        for a, expected in zip(archs, before):
            torch.testing.assert_close(net(tokens, a, mask), expected, atol=1e-10, rtol=1e-10)
        assert not torch.allclose(net(tokens, uniform("full", heads=2, ffn=128, depth=6), mask), small_before)
    for block in net.blocks:
        units = unit_importance(block.ffn)
        assert torch.all(units[:-1] >= units[1:])
        for proj in block.attn.projections.values():
            heads = head_importance(proj["out"], lra.head_dim)
            assert torch.all(heads[:-1] >= heads[1:])


@pytest.mark.parametrize("sharing", ["entangled", "separate"])
def test_sorting_keeps_the_widest_arch_of_every_hybrid_mixer(sharing):
    """The mixers' per-head parameters and buffers (RetNet's decays, Hyena's filters in a submodule)
    move with their heads."""
    space = load_space("hybrid")
    torch.manual_seed(0)
    net = Supernet(space, SHAPE, sharing=sharing).eval()
    perturb(net, 3, scale=0.2)
    with torch.no_grad():  # head 0 the least important, so that sorting moves RetNet's heads whatever the init
        net.blocks[0].attn.projections_of("retnet")["out"].weight[:, : space.head_dim] *= 0.01
    net.double()
    tokens, mask = batch()
    archs = [uniform(op, depth=2) for op in space.attention]
    with torch.no_grad():
        before = [net(tokens, a, mask) for a in archs]
    orders = sort_by_importance(net)
    assert any(order != sorted(order) for order in orders.values())
    order = orders[f"blocks.0.attn.{'shared' if sharing == 'entangled' else 'retnet'}"]
    assert order != sorted(order)
    decays = retention_log_decay(space.max_heads).double()[order]  # head i's decay went where head i went
    torch.testing.assert_close(net.blocks[0].attn.cores["retnet"].log_decay, decays, rtol=0, atol=0)
    with torch.no_grad():
        for a, expected in zip(archs, before):
            torch.testing.assert_close(net(tokens, a, mask), expected, atol=1e-10, rtol=1e-10, msg=a.describe())


def test_sorting_permutes_the_optimizer_state_with_the_weights(lra):
    torch.manual_seed(0)
    net = Supernet(lra, SHAPE)
    perturb(net, 3, scale=0.2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    tokens, mask = batch()
    torch.nn.functional.cross_entropy(net(tokens, lra.largest(), mask), torch.tensor([1, 2])).backward()
    opt.step()
    fc1 = net.blocks[0].ffn.fc1.weight
    moment = opt.state[fc1]["exp_avg"].clone()
    order = sort_by_importance(net, opt)["blocks.0.ffn"]
    torch.testing.assert_close(opt.state[fc1]["exp_avg"], moment[order], rtol=0, atol=0)


def test_sorting_a_few_shot_supernet_sorts_each_copy(lra):
    net = FewShotSupernet(Supernet(lra, SHAPE), "depth")
    for k, sub in enumerate(net.subnets):
        perturb(sub, k, scale=0.2)
    orders = sort_by_importance(net)
    assert {key.split(".blocks")[0] for key in orders} == {f"subnets.{k}" for k in range(len(lra.depths))}


# -- per-type gains (entangled_gain) ---------------------------------------------------------
def test_gains_start_as_plain_entangled_sharing(lra):
    torch.manual_seed(0)
    plain = Supernet(lra, SHAPE, sharing="entangled").eval()
    gained = Supernet(lra, SHAPE, sharing="entangled_gain").eval()
    missing = gained.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".attn.gains." in k for k in missing)
    tokens, mask = batch()
    with torch.no_grad():
        for seed in range(5):
            arch = lra.sample(seed)
            torch.testing.assert_close(gained(tokens, arch, mask), plain(tokens, arch, mask), rtol=0, atol=0)


def test_gains_of_one_type_leave_the_other_types_alone(lra):
    torch.manual_seed(0)
    net = Supernet(lra, SHAPE, sharing="entangled_gain").eval()
    tokens, mask = batch()
    with torch.no_grad():
        full, linformer = net(tokens, uniform("full"), mask), net(tokens, uniform("linformer"), mask)
        for block in net.blocks:
            block.attn.gains["linformer"].mul_(1.5)
        torch.testing.assert_close(net(tokens, uniform("full"), mask), full, rtol=0, atol=0)
        assert not torch.allclose(net(tokens, uniform("linformer"), mask), linformer)
    # a training step on exact attention gives no gradient to the approximate types' gains
    net.train()
    torch.nn.functional.cross_entropy(net(tokens, uniform("full"), mask), torch.tensor([1, 2])).backward()
    gains = net.blocks[0].attn.gains
    assert gains["full"].grad is not None and gains["full"].grad.abs().sum() > 0
    assert all(gains[op].grad is None for op in lra.attention if op != "full")


def test_gains_fold_into_the_mixed_forward(lra):
    """DARTS's mixture with a one-hot weight equals the single path, gains included."""
    torch.manual_seed(0)
    net = Supernet(lra, SHAPE, sharing="entangled_gain").eval()
    for block in net.blocks:
        perturb(block.attn.gains, 0, scale=0.5)
    arch = uniform("performer", depth=6)
    weights = {}
    for key, choices in lra.decisions().items():
        picked = lra.choices_of(arch)[key]
        weights[key] = torch.tensor([float(c == picked) for c in choices])
    tokens, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(
            net.forward_mixed(tokens, weights, mask), net(tokens, arch, mask), atol=1e-5, rtol=1e-5
        )


# -- each mechanism trains through the search loop, then extracts exactly ---------------------
TRAINED = [
    ("entangled_gain", None, {}),
    ("entangled", "layer0.attention", {}),
    ("separate", None, {"fair": True, "sort_every": 1}),
    ("entangled", None, {"sandwich": True, "distill": 0.5, "sort_every": 1}),
]


@pytest.mark.parametrize("sharing,split,options", TRAINED)
def test_each_mechanism_trains_and_extracts_its_output(tmp_path, sharing, split, options):
    from nas.training.run import run_search
    from tests.strategies.planted import FetchTask, make, trainer

    torch.manual_seed(0)
    space = SearchSpace.from_yaml(SPACES / "quickstart.yaml")
    task = FetchTask(seq_len=16, distance=8, size=128, batch_size=32)
    net = Supernet(space, task.shape, sharing=sharing)
    if split:
        net = FewShotSupernet(net, split)
    before = [p.detach().clone() for p in net.parameters()]
    strategy = make("random", space, seed=0, samples=4, **options)
    _, result = run_search(net, strategy, task, "acc", trainer(tmp_path, epochs=1), lr=3e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    tokens = torch.randint(1, task.vocab_size, (2, task.seq_len))
    net.eval()
    for seed in range(4):
        arch = space.sample(seed)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(arch).eval()(tokens), net(tokens, arch), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sharing", ["entangled", "separate", "entangled_gain"])
def test_mechanisms_on_cuda(lra, sharing):
    """Sorting, gains, few-shot routing and extraction with every tensor on the GPU."""
    torch.manual_seed(0)
    net = FewShotSupernet(Supernet(lra, SHAPE, sharing=sharing), "layer0.attention")
    perturb(net, 0, scale=0.2)
    net = net.cuda().double().eval()
    opt = torch.optim.AdamW(net.parameters())
    tokens, mask = (t.cuda() for t in batch())
    widest = [uniform(op, depth=6) for op in lra.attention]
    net.train()
    torch.nn.functional.cross_entropy(net(tokens, widest[0], mask), torch.tensor([1, 2]).cuda()).backward()
    opt.step()
    net.eval()
    with torch.no_grad():
        before = [net(tokens, a, mask) for a in widest]
    sort_by_importance(net, opt)
    with torch.no_grad():
        for a, expected in zip(widest, before):
            torch.testing.assert_close(net(tokens, a, mask), expected, atol=1e-10, rtol=1e-10)
        for seed in range(5):
            arch = lra.sample(seed)
            torch.testing.assert_close(
                net.extract(arch).eval()(tokens, mask), net(tokens, arch, mask), atol=1e-10, rtol=1e-10
            )


def test_a_few_shot_search_checkpoint_loads_back(tmp_path):
    from nas.training.run import run_search
    from nas.training.search import load_supernet
    from tests.strategies.planted import FetchTask, make, trainer

    space = SearchSpace.from_yaml(SPACES / "quickstart.yaml")
    task = FetchTask(seq_len=16, distance=8, size=64, batch_size=32)
    net = FewShotSupernet(Supernet(space, task.shape), "depth")
    fit = trainer(tmp_path, epochs=1)
    run_search(net, make("random", space, samples=2), task, "acc", fit)
    fit.save_checkpoint(tmp_path / "last.ckpt")
    loaded = load_supernet(tmp_path / "last.ckpt", space).eval()
    assert isinstance(loaded, FewShotSupernet) and loaded.split == "depth"
    tokens = torch.randint(1, task.vocab_size, (2, task.seq_len))
    with torch.no_grad():
        for seed in range(4):
            arch = space.sample(seed)
            torch.testing.assert_close(loaded(tokens, arch), net.eval()(tokens, arch), rtol=0, atol=0)


def test_nas_search_trains_a_few_shot_supernet(tmp_path):
    from nas import pipeline
    from nas.cli import search
    from nas.training.search import load_supernet
    from tests.helpers import TINY, compose_config

    cfg = compose_config(
        "search", tmp_path / "run", [*TINY, "strategy=random", "few_shot=layer0.attention", "retrain.enabled=false"]
    )
    search.run(cfg)
    loaded = load_supernet(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert isinstance(loaded, FewShotSupernet) and loaded.split == "layer0.attention"
    bad = compose_config("search", tmp_path / "bad", [*TINY, "few_shot=layer5.heads"])
    with pytest.raises(ConfigError, match="cannot split on 'layer5.heads'; allowed: depth, layer0.attention"):
        pipeline.search(bad, tmp_path / "bad")


def test_few_shot_from_a_trained_one_shot_run(tmp_path):
    """few_shot_from=: every sub-supernet starts from the one-shot run's trained weights (Zhao
    et al.), not from a fresh supernet; a mismatched or missing source is one line."""
    from nas import pipeline
    from nas.cli import search
    from nas.training.search import load_supernet
    from tests.helpers import TINY, compose_config

    one_shot = tmp_path / "one_shot"
    search.run(compose_config("search", one_shot, [*TINY, "strategy=random", "retrain.enabled=false"]))
    trained = load_supernet(one_shot / "checkpoints" / "last.ckpt")
    fresh = Supernet(trained.space, trained.shape, sharing=trained.sharing)
    parent = pipeline.one_shot_parent(one_shot, fresh)
    for (name, value), (_, expected) in zip(parent.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(value, expected), name
    split = FewShotSupernet(parent, "layer0.attention")
    for sub in split.subnets:
        assert all(torch.equal(a, b) for a, b in zip(sub.state_dict().values(), trained.state_dict().values()))

    cfg = compose_config(
        "search",
        tmp_path / "few",
        [*TINY, "strategy=random", "retrain.enabled=false", "few_shot=layer0.attention", f"few_shot_from={one_shot}"],
    )
    search.run(cfg)
    assert isinstance(load_supernet(tmp_path / "few" / "checkpoints" / "last.ckpt"), FewShotSupernet)

    with pytest.raises(ConfigError, match="needs few_shot="):
        pipeline.search(compose_config("search", tmp_path / "a", [*TINY, f"few_shot_from={one_shot}"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="no search checkpoint there"):
        pipeline.one_shot_parent(tmp_path / "missing", fresh)
    with pytest.raises(ConfigError, match="a few-shot supernet"):
        pipeline.one_shot_parent(tmp_path / "few", fresh)
    other_sharing = "entangled" if trained.sharing == "separate" else "separate"
    other = Supernet(trained.space, trained.shape, sharing=other_sharing)
    with pytest.raises(ConfigError, match=f"sharing={trained.sharing}, this search has .* sharing={other_sharing}"):
        pipeline.one_shot_parent(one_shot, other)
