"""DARTS and GDAS on planted tasks, with and without a cost penalty."""

import pytest
import torch

from nas.errors import ConfigError
from nas.metrics import task_loss
from nas.model import ModelShape
from nas.supernet import Supernet
from nas.training.run import run_search

from .planted import FetchTask, make, planted_space, trainer


def search(tmp_path, name, task, epochs, **options):
    torch.manual_seed(0)
    space = planted_space()
    net = Supernet(space, task.shape)
    strategy = make(name, space, seed=0, seq_len=task.seq_len, **options)
    module, result = run_search(net, strategy, task, "acc", trainer(tmp_path, epochs=epochs), lr=3e-3)
    return strategy, result


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_a_global_op_wins_where_it_matters(tmp_path, name):
    strategy, result = search(tmp_path, name, FetchTask(distance=23), epochs=4)
    assert "full" in {layer.attention for layer in result.best.layers}
    assert len(strategy.history) == 4  # the distribution was recorded every epoch


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_a_cost_penalty_picks_the_cheap_op_when_it_suffices(tmp_path, name):
    strategy, result = search(tmp_path, name, FetchTask(distance=1), epochs=3, penalty={"cost": "flops", "weight": 5.0})
    assert {layer.attention for layer in result.best.layers} == {"local"}
    assert result.best.depth == 1


def test_second_order_runs_and_learns(tmp_path):
    strategy, result = search(tmp_path, "darts", FetchTask(distance=23, size=512), epochs=3, second_order=True)
    assert "full" in {layer.attention for layer in result.best.layers}


class _Ctx:
    """Just what `DartsStrategy.loss` reads."""

    def __init__(self, supernet):
        self.supernet = supernet


def test_partial_one_is_plain_darts_exactly():
    """K=1: no edge weights, the same loss and the same gradients (weights and alphas) as the
    supernet's plain soft forward."""
    torch.manual_seed(0)
    task = FetchTask(size=64)
    task.setup()
    tokens, mask, target = task.train_set[:8]
    batch = {"tokens": tokens, "mask": mask, "target": target}
    space = planted_space()
    net = Supernet(space, task.shape)
    strategy = make("darts", space, seed=0, partial=1)
    assert strategy.betas is None and strategy.edge_weights() is None
    params = list(net.parameters()) + strategy.arch_parameters()
    loss = strategy.loss(_Ctx(net), batch, strategy.mixture_weights())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    plain = task_loss(net.forward_mixed(tokens, strategy.probabilities(), mask), target)
    plain_grads = torch.autograd.grad(plain, params, allow_unused=True)
    assert torch.equal(loss, plain)
    for g, p in zip(grads, plain_grads):
        assert (g is None and p is None) or torch.equal(g, p)


def test_edge_weights_sum_to_two_per_layer_and_learn(tmp_path):
    strategy, result = search(tmp_path, "darts", FetchTask(distance=23, size=256), epochs=2, partial=2)
    edges = strategy.edge_weights()
    assert edges.shape == (planted_space().max_depth, 2)
    torch.testing.assert_close(edges.sum(-1), torch.full((edges.shape[0],), 2.0))
    assert not torch.equal(strategy.betas.detach(), torch.zeros_like(strategy.betas))  # the arch step moved them


def test_partial_must_divide_the_heads():
    with pytest.raises(ConfigError, match="strategy.partial=3"):
        make("darts", planted_space(), partial=3)


def test_second_order_runs_with_partial_heads(tmp_path):
    strategy, result = search(
        tmp_path, "darts", FetchTask(distance=23, size=256), epochs=1, second_order=True, partial=2
    )
    betas = strategy.betas.detach()
    assert torch.isfinite(betas).all() and not torch.equal(
        betas, torch.zeros_like(betas)
    )  # the unrolled step moved them


def test_softmax_temperature_is_annealed_to_its_end_value(tmp_path):
    strategy, _ = search(
        tmp_path, "darts", FetchTask(distance=23, size=256), epochs=3, temperature={"start": 1.0, "end": 0.2}
    )
    assert float(strategy.softmax_tau) == pytest.approx(0.2)
    logit = strategy.logits()["layer0.attention"].detach()
    torch.testing.assert_close(strategy.probabilities()["layer0.attention"].detach(), torch.softmax(logit / 0.2, -1))


def test_decisiveness_penalties_match_their_formulas():
    """Entropy: the mean over decisions of -sum p log p; zero-one (Fair DARTS): -mean (p - 0.5)^2."""
    strategy = make("darts", planted_space(), seed=0, sharpen={"entropy": 2.0, "zero_one": 3.0})
    with torch.no_grad():
        for p in strategy.alphas.parameters():
            p.copy_(torch.randn(p.shape))
    probs = [torch.softmax(l.detach(), -1) for l in strategy.logits().values()]
    entropy = sum(-(p * p.log()).sum() for p in probs) / len(probs)
    flat = torch.cat(probs)
    zero_one = -((flat - 0.5) ** 2).sum() / len(flat)
    torch.testing.assert_close(strategy.arch_penalty().detach(), 2.0 * entropy + 3.0 * zero_one)


def test_a_zero_one_penalty_widens_the_margin(tmp_path):
    """Same seed and data: the run with the penalty ends with a larger smallest margin."""

    def smallest_margin(strategy):
        return min(
            sorted(p, reverse=True)[0] - (sorted(p, reverse=True) + [0.0])[1]
            for p in strategy.history[-1].values()
            if len(p) > 1
        )

    plain, _ = search(tmp_path / "plain", "darts", FetchTask(distance=23, size=256), epochs=2)
    pushed, _ = search(
        tmp_path / "pushed", "darts", FetchTask(distance=23, size=256), epochs=2, sharpen={"zero_one": 5.0}
    )
    assert smallest_margin(pushed) > smallest_margin(plain)


# a forecaster: 7 channels of 96 steps, each read as 11 patches (the blocks' positions are not the steps)
SERIES = ModelShape(1, 24, 96, "forecast", input="values", channels=7, patch_len=16, patch_stride=8)


@pytest.mark.parametrize("series", [False, True])
@pytest.mark.parametrize("reversible", [False, True])
@pytest.mark.parametrize("kind", ["params", "flops", "memory"])
def test_expected_cost_of_a_decided_distribution_is_the_arch_cost(kind, reversible, series):
    """With every decision one-hot the penalty's expectation is the cost model's cost of that
    arch, reversible memory included (the largest layer, not the sum: memory flat in depth)."""
    from nas import cost
    from nas.space import Arch, LayerArch, SearchSpace

    space = SearchSpace.from_dict({**planted_space().to_dict(), "memory": {"reversible": reversible}})
    task = FetchTask(size=64)
    shape, seq_len = (SERIES, SERIES.max_len) if series else (task.shape, task.seq_len)
    strategy = make("darts", space, seed=0, seq_len=seq_len, penalty={"cost": kind, "weight": 1.0})
    strategy.attach(Supernet(space, shape))
    arch = Arch(2, (LayerArch("full", 2, 64), LayerArch("local", 2, 64)))  # the larger layer first
    choices = space.choices_of(arch)
    with torch.no_grad():
        for key, options in space.decisions().items():
            one_hot = torch.full((len(options),), -1e4)
            one_hot[options.index(choices[key])] = 0.0
            strategy.alphas[key.replace(".", "_")].copy_(one_hot)
    expected = cost.arch_cost(arch, space, shape, seq_len, kind)
    probs = strategy.probabilities()
    assert strategy.penalty.expected(probs).item() == pytest.approx(expected, rel=1e-5)
    # and the final decision's penalty of that arch (decide.rule=greedy/top2 under a cost) is the same
    assert strategy.penalty.of_arch(arch) == pytest.approx(strategy.penalty(probs).item(), rel=1e-5)
