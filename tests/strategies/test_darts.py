"""DARTS and GDAS on planted tasks, with and without a cost penalty."""
import pytest
import torch

from nas.errors import ConfigError
from nas.metrics import task_loss
from nas.strategies import STRATEGIES
from nas.supernet import Supernet
from nas.training.run import run_search

from .planted import FetchTask, planted_space, trainer


def search(tmp_path, name, task, epochs, **options):
    torch.manual_seed(0)
    space = planted_space()
    net = Supernet(space, task.shape)
    strategy = STRATEGIES.get(name)(space, seed=0, seq_len=task.seq_len, **options)
    module, result = run_search(net, strategy, task, "acc", trainer(tmp_path, epochs=epochs), lr=3e-3)
    return strategy, result


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_a_global_op_wins_where_it_matters(tmp_path, name):
    strategy, result = search(tmp_path, name, FetchTask(distance=23), epochs=4)
    assert "full" in {layer.attention for layer in result.best.layers}
    assert len(strategy.history) == 4  # the distribution was recorded every epoch


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_a_cost_penalty_picks_the_cheap_op_when_it_suffices(tmp_path, name):
    strategy, result = search(tmp_path, name, FetchTask(distance=1), epochs=3, cost="flops", cost_weight=5.0)
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
    strategy = STRATEGIES.get("darts")(space, seed=0, partial=1)
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
        STRATEGIES.get("darts")(planted_space(), partial=3)


def test_second_order_runs_with_partial_heads(tmp_path):
    strategy, result = search(tmp_path, "darts", FetchTask(distance=23, size=256), epochs=1,
                              second_order=True, partial=2)
    betas = strategy.betas.detach()
    assert torch.isfinite(betas).all() and not torch.equal(betas, torch.zeros_like(betas))  # the unrolled step moved them
