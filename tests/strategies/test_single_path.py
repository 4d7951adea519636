"""Single-path strategies on planted tasks; fair paths, sandwich and importance sorting."""

import random
from pathlib import Path

import pytest
import torch

from nas.errors import ConfigError
from nas.model import ModelShape
from nas.space import Arch, LayerArch, SearchSpace
from nas.strategies import STRATEGIES
from nas.strategies.sampling import fair_paths
from nas.supernet import Supernet
from nas.training.run import run_search

from .planted import FetchTask, make, planted_space, trainer

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def test_random_search_finds_the_global_op(tmp_path):
    space = planted_space()
    task = FetchTask()
    net = Supernet(space, task.shape)
    strategy = make("random", space, seed=0, samples=8)
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
    _, result = run_search(net, make("fixed", space, arch=arch), task, "acc", trainer(tmp_path, epochs=1))
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


# -- strictly fair paths, sandwich, importance sorting ----------------------------------------
class RecordingModule:
    """The part of the SearchContext a strategy uses: losses of archs, one step; records both."""

    metric = "acc"

    def __init__(self, net, current_epoch=0):
        self.supernet, self.current_epoch = net, current_epoch
        self.archs, self.steps = [], 0
        self.opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def arch_loss(self, batch, arch):
        self.archs.append(arch)
        logits = self.supernet(batch["tokens"], arch, batch["mask"])
        return torch.nn.functional.cross_entropy(logits, batch["target"]), logits

    def step(self, loss, optimizer_index=0):
        self.opt.zero_grad()
        loss.backward()  # the grads stay for the test to read; no optimizer step
        self.steps += 1

    def optimizer(self, index=0):
        return self.opt

    def agree(self, value):
        return value


def quickstart():
    return SearchSpace.from_yaml(SPACES / "quickstart.yaml")


def tiny_batch(space, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "tokens": torch.randint(1, 20, (3, 24), generator=g),
        "mask": torch.ones(3, 24, dtype=torch.bool),
        "target": torch.tensor([0, 1, 2]),
    }


def test_fair_paths_train_every_choice_of_every_layer_exactly_once():
    space = quickstart()  # 4 attention types, 2 heads, 2 widths, depths 1-2: m = 4 paths
    paths = fair_paths(space, random.Random(0))
    assert len(paths) == 4
    for key, choices in space.decisions().items():
        if key.startswith("layer1."):
            continue  # a depth-1 path has no layer 1
        picked = [space.choices_of(a)[key] for a in paths]
        assert sorted(map(str, picked)) == sorted(map(str, choices * (4 // len(choices)))), key
    assert fair_paths(space, random.Random(0)) == paths
    assert fair_paths(space, random.Random(1)) != paths


def test_fair_step_sums_the_per_path_gradients_in_one_step():
    space = quickstart()
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(20, 3, 24))
    strategy = make("random", space, seed=0, fair=True)
    module = RecordingModule(net)
    batch = tiny_batch(space)
    strategy.training_step(module, batch, None)
    assert module.steps == 1 and len(module.archs) == 4
    assert {a.layers[0].attention for a in module.archs} == set(space.attention)
    got = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    for arch in module.archs:  # one backward per path, gradients accumulating
        torch.nn.functional.cross_entropy(net(batch["tokens"], arch, batch["mask"]), batch["target"]).backward()
    expected = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], atol=1e-6, rtol=1e-5)


def test_sandwich_trains_largest_smallest_and_the_sampled_paths():
    space = quickstart()
    net = Supernet(space, ModelShape(20, 3, 24))
    module = RecordingModule(net)
    make("random", space, sandwich=True, fair=True, distill=0.5).training_step(module, tiny_batch(space), None)
    assert module.archs[:2] == [space.largest(), space.smallest()] and len(module.archs) == 6
    with pytest.raises(ConfigError, match="strategy.distill needs strategy.sandwich=true"):
        make("random", space, distill=0.5)
    with pytest.raises(ConfigError, match="strategy.sort_every=-1: must be a whole number >= 0"):
        make("random", space, sort_every=-1)


def test_enas_can_train_the_shared_weights_with_the_sandwich_rule():
    space = quickstart()
    module = RecordingModule(Supernet(space, ModelShape(20, 3, 24)))
    make("enas", space, sandwich=True).training_step(module, tiny_batch(space), None)
    assert module.archs[:2] == [space.largest(), space.smallest()] and len(module.archs) == 3
    assert module.steps == 1


def test_sort_every_reorders_widths_at_epoch_end():
    space = quickstart()
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(20, 3, 24))
    strategy = make("random", space, sort_every=2)
    strategy.attach(net)
    fc1 = net.blocks[0].ffn.fc1.weight
    before = fc1.detach().clone()
    strategy.on_epoch_end(RecordingModule(net, current_epoch=0))  # epoch 1 of every 2: nothing
    assert torch.equal(fc1, before)
    strategy.on_epoch_end(RecordingModule(net, current_epoch=1))
    assert not torch.equal(fc1, before)
    units = net.blocks[0].ffn.fc2.weight.abs().sum(0)
    assert torch.all(units[:-1] >= units[1:])


@pytest.mark.parametrize("name, options", [("random", {"samples": 12}), ("enas", {"final_samples": 12})])
def test_search_breaks_metric_ties_by_loss_then_params(name, options):
    """A saturated metric (every arch right) leaves the pick to the validation loss."""
    space = quickstart()
    torch.manual_seed(0)
    net = Supernet(space, ModelShape(20, 3, 24))
    batch = tiny_batch(space)
    with torch.no_grad():  # a readout bias so large that every arch predicts the target class 0
        net.readout.linear.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    batch["target"] = torch.zeros(3, dtype=torch.long)
    module = RecordingModule(net)
    strategy = make(name, space, seed=0, **options)
    strategy.attach(net)
    result = strategy.finish(module, [batch])
    assert len({c.metrics["val/acc"] for c in result.ranked}) == 1  # all tie at 1.0
    keys = [(c.metrics["val/loss"], c.metrics["cost/params"]) for c in result.ranked]
    assert keys == sorted(keys) and len(set(keys)) > 1
    assert result.best == result.ranked[0].arch
