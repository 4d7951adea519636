"""A tiny nas-search prints none of the routine notices it used to (Lightning's advert, its
pytree deprecation, the log_every_n_steps hint) and names its run folder before training."""
import logging
import warnings

from nas.cli import search as search_cli

from .conftest import TINY_TASK

NOTICES = ["Tip:", "LeafSpec", "smaller than the logging interval"]


def test_a_tiny_search_prints_no_routine_notice(config, tmp_path, capsys, caplog):
    cfg = config("search", *[o for o in TINY_TASK if "log_every" not in o], "trainer.max_epochs=1",
                 "search.eval_batches=2", "retrain.enabled=false")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        search_cli.run(cfg)
    text = "\n".join([str(w.message) for w in caught] + [caplog.text, *capsys.readouterr()])
    assert not [notice for notice in NOTICES if notice in text], text[-3000:]
    assert f"run folder: {tmp_path / 'run'}" in caplog.text
