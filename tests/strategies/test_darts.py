"""DARTS and GDAS on planted tasks, with and without a cost penalty."""
import pytest
import torch

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
