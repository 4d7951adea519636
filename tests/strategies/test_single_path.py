"""Single-path strategies on planted tasks."""
import pytest
import torch

from nas.errors import ConfigError
from nas.space import Arch, LayerArch
from nas.strategies import STRATEGIES
from nas.supernet import Supernet
from nas.training.run import run_search

from .planted import FetchTask, planted_space, trainer


def test_random_search_finds_the_global_op(tmp_path):
    space = planted_space()
    task = FetchTask()
    net = Supernet(space, task.shape)
    strategy = STRATEGIES.get("random")(space, seed=0, samples=8)
    _, result = run_search(net, strategy, task, "acc", trainer(tmp_path, epochs=4), lr=3e-3)
    best = result.ranked[0]
    assert best.metrics["val/acc"] > 0.9
    assert "full" in {layer.attention for layer in result.best.layers}
    # archs made only of the small local window cannot see both ends
    local_only = [c for c in result.ranked if {l.attention for l in c.arch.layers} == {"local"}]
    assert local_only and all(c.metrics["val/acc"] < 0.7 for c in local_only)


def test_fixed_arch_trains_that_arch(tmp_path):
    space = planted_space()
    arch = Arch(1, (LayerArch("full", 2, 64),))
    task = FetchTask()
    net = Supernet(space, task.shape)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _, result = run_search(net, STRATEGIES.get("fixed")(space, arch=arch), task, "acc", trainer(tmp_path, epochs=1))
    assert result.best == arch
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # the arch's one layer, the embeddings and the readout trained; the second layer, which
    # the arch does not use, kept its initial weights
    assert {"embed.tokens.weight", "readout.linear.weight"} <= changed
    assert any(k.startswith("blocks.0.") for k in changed)
    assert not any(k.startswith("blocks.1.") for k in changed)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown strategy 'bayes'; known: .*darts.*random"):
        STRATEGIES.get("bayes")
