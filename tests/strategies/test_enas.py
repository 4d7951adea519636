"""ENAS: the planted task, the controller's REINFORCE update alone, and resuming mid-search."""

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from nas.supernet import Supernet
from nas.training.run import run_search

from .planted import FetchTask, make, planted_space, trainer


def search(task, run: pl.Trainer, ckpt_path=None, seed=0, **options):
    """An ENAS search on the planted space."""
    torch.manual_seed(seed)
    space = planted_space()
    net = Supernet(space, task.shape)
    strategy = make("enas", space, seed=seed, **options)
    _, result = run_search(net, strategy, task, "acc", run, ckpt_path=ckpt_path, lr=3e-3)
    return strategy, result


def attentions(arch) -> set[str]:
    return {layer.attention for layer in arch.layers}


def entropy(probabilities: dict[str, list[float]]) -> float:
    return -sum(p * math.log(p) for values in probabilities.values() for p in values if p > 0)


def test_a_global_op_wins_where_it_matters(tmp_path):
    strategy, result = search(FetchTask(distance=23), trainer(tmp_path, epochs=2))
    assert "full" in attentions(result.best)
    assert result.ranked[0].metrics["val/acc"] > 0.9
    assert "full" in attentions(strategy.current_arch())  # the controller itself learned it
    # the distribution was recorded every epoch, per decision (the TensorBoard heatmap reads it)
    assert len(strategy.history) == 2 and list(strategy.history[0]) == list(strategy.space.decisions())
    uniform = sum(math.log(len(choices)) for choices in strategy.space.decisions().values())
    assert entropy(strategy.history[-1]) < 0.5 * uniform  # it grew confident


def test_reinforce_raises_the_probability_of_rewarded_choices():
    strategy = make("enas", planted_space(), seed=0, controller_lr=1e-2, entropy_weight=0.0)
    optimizer = strategy.optimizers()[0]
    assert strategy.optimizers()[0] is optimizer  # made once: Lightning restores its state

    def p_full(n=512) -> float:
        with torch.no_grad():
            return sum(a.layers[0].attention == "full" for a in strategy.sample(n).archs) / n

    start = p_full()
    for _ in range(40):
        samples = strategy.sample(8)
        rewards = torch.tensor([float(a.layers[0].attention == "full") for a in samples.archs])
        optimizer.zero_grad()
        strategy.reinforce_loss(samples, rewards).backward()
        optimizer.step()
    assert 0.3 < start < 0.7  # near-uniform at the start
    assert p_full() > 0.9
    assert strategy.current_arch().layers[0].attention == "full"
    assert 0.5 < strategy.baseline <= 1.0  # the baseline tracks the rising reward


def test_state_dict_round_trip_replays_the_same_samples():
    space = planted_space()
    strategy = make("enas", space, seed=0)
    strategy.reinforce_loss(strategy.sample(4), torch.rand(4))  # sets the baseline
    state = strategy.state_dict()
    fresh = make("enas", space, seed=1)
    fresh.load_state_dict(state)
    assert fresh.baseline == strategy.baseline
    assert fresh.sample(32).archs == strategy.sample(32).archs


def checkpointing_trainer(root, epochs) -> pl.Trainer:
    """Saves a checkpoint after every epoch, once the strategy's epoch-end hook has run."""
    every_epoch = ModelCheckpoint(
        dirpath=root, filename="{epoch}", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True
    )
    return trainer(root, epochs, callbacks=[every_epoch])


def test_resuming_mid_search_ends_where_an_uninterrupted_run_does(tmp_path):
    task = FetchTask(distance=23, size=512)
    whole, whole_result = search(task, checkpointing_trainer(tmp_path / "whole", 2))
    # Another seed: whatever the resumed run gets right, it must have taken from the checkpoint.
    resumed, resumed_result = search(
        task, checkpointing_trainer(tmp_path / "resumed", 2), ckpt_path=tmp_path / "whole" / "epoch=0.ckpt", seed=1
    )
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["epoch=1.ckpt"]
    assert resumed.steps == whole.steps == 2 * 16
    assert resumed.baseline == whole.baseline
    assert resumed.history == whole.history
    for key, value in whole.state_dict().items():
        if not key.endswith("_extra_state"):
            assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed_result.ranked == whole_result.ranked
