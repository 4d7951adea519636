"""Every strategy resumed from a mid-search Lightning checkpoint ends with the arch and the
supernet weights of an uninterrupted run with the same seed."""

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from nas.space import Arch, LayerArch
from nas.strategies import STRATEGIES
from nas.supernet import Supernet
from nas.training.run import run_search

from .planted import FetchTask, make, planted_space
from .planted import trainer as planted_trainer

OPTIONS = {
    "darts": {"seq_len": 24},
    "gdas": {"seq_len": 24},
    "random": {"samples": 4},
    "evolution": {"population": 4, "generations": 2, "seq_len": 24},
    "enas": {"final_samples": 4},
    "fixed": {"arch": Arch(1, (LayerArch("full", 2, 64),))},
}
# variants: a test id -> (strategy, options)
VARIANTS = {
    "darts-partial": ("darts", {"seq_len": 24, "partial": 2}),
    "darts-shrink": ("darts", {"seq_len": 24, "shrink": {"every": 1}}),  # shrunk after epoch 0
    "gdas-shrink": ("gdas", {"seq_len": 24, "shrink": {"every": 1}}),
    "darts-top2": ("darts", {"seq_len": 24, "decide": {"rule": "top2"}}),
    "gdas-argmax": ("gdas", {"seq_len": 24, "decide": {"rule": "argmax"}}),
}  # darts, gdas: greedy


def search(name, root, ckpt_path=None):
    torch.manual_seed(0)
    task = FetchTask(size=256)
    space = planted_space()
    net = Supernet(space, task.shape)
    name, options = VARIANTS.get(name, (name, OPTIONS.get(name, {})))
    strategy = make(name, space, seed=0, **options)
    every_epoch = ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    trainer = planted_trainer(root, 2, callbacks=[every_epoch])
    torch.manual_seed(0 if ckpt_path is None else 123)  # a resumed run must get its state from the checkpoint
    _, result = run_search(net, strategy, task, "acc", trainer, ckpt_path=ckpt_path, lr=3e-3)
    return net, result


@pytest.mark.parametrize("name", [*STRATEGIES.names(), *VARIANTS])
def test_resume_ends_like_an_uninterrupted_run(tmp_path, name):
    whole_net, whole = search(name, tmp_path / "whole")
    resumed_net, resumed = search(name, tmp_path / "resumed", ckpt_path=tmp_path / "whole" / "epoch=0.ckpt")
    assert resumed.best == whole.best
    assert [c.arch for c in resumed.ranked] == [c.arch for c in whole.ranked]
    # The same weights too: the second epoch replayed the same batches and samples (a fixed
    # arch returns its arch whatever happens, so for it this is the whole test).
    for key, value in whole_net.state_dict().items():
        torch.testing.assert_close(resumed_net.state_dict()[key], value, msg=key)
