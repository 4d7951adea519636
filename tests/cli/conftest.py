"""Compose the real configs with tiny CPU overrides, writing into tmp_path."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.cli.common import CONFIGS

# A few seconds of work: 48-token recall, a handful of batches, one epoch each stage.
TINY_TASK = [
    "task.seq_len=48", "task.num_pairs=4", "task.num_queries=4", "task.num_keys=16",
    "task.num_values=16", "task.num_train=256", "task.num_val=64", "task.num_test=64",
    "task.batch_size=32", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
]
TINY = [*TINY_TASK, "trainer.max_epochs=1", "search.eval_batches=2"]  # for nas-search


def compose_config(name: str, run_dir: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=[
            f"paths.output_dir={run_dir}", f"paths.data_dir={run_dir.parent / 'data'}", *overrides])


@pytest.fixture
def config(tmp_path):
    def make(name: str, *overrides: str, run_dir: Path | None = None):
        return compose_config(name, run_dir or tmp_path / "run", list(overrides))
    return make
