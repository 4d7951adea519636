"""A tiny nas-search (search, retrain, export) prints none of the routine notices it used to
(Lightning's advert, its pytree deprecation, the log_every_n_steps hint, matplotlib's note on
numeric labels) and names its run folder before training; a resumed checkpoint callback says
nothing about its own folder."""

import logging
import warnings

import torch

from nas.cli import search as search_cli
from nas.training.checkpoint import last_checkpoint
from tests.helpers import TINY_TASK

NOTICES = [
    "Tip:",
    "LeafSpec",
    "smaller than the logging interval",
    "categorical units",
    "validation_step",
    "exists and is not empty",
    "dirpath has changed",
]


def test_a_tiny_search_prints_no_routine_notice(config, tmp_path, capsys, caplog):
    # the default log interval (10) is longer than the tiny epoch (8 batches): it is shortened
    cfg = config(
        "search",
        *[o for o in TINY_TASK if "log_every" not in o],
        "trainer.max_epochs=1",
        "search.eval_batches=2",
        "retrain.max_epochs=1",
    )
    assert cfg.trainer.log_every_n_steps > cfg.task.num_train // cfg.task.batch_size
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        search_cli.run(cfg)
    text = "\n".join([str(w.message) for w in caught] + [caplog.text, *capsys.readouterr()])
    assert not [notice for notice in NOTICES if notice in text], text[-3000:]
    assert f"run folder: {tmp_path / 'run'}" in caplog.text
    assert (tmp_path / "run" / "export" / "model.pt2").is_file()


def test_a_moved_run_folder_resumes_its_best_checkpoint_quietly(tmp_path):
    """The checkpoint callback's state names the folder it wrote; after the run folder moved,
    its best and last paths point into the new folder and no warning is given."""
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    written = last_checkpoint(old)
    written.best_model_path, written.best_model_score = str(old / "best.ckpt"), torch.tensor(0.5)
    written.best_k_models = {str(old / "best.ckpt"): torch.tensor(0.5)}
    state = written.state_dict()
    resumed = last_checkpoint(new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed.load_state_dict(state)
    assert resumed.best_model_path == str(new / "best.ckpt") and resumed.best_model_score == 0.5
    assert list(resumed.best_k_models) == [str(new / "best.ckpt")]
