"""What many test files share: the shipped search spaces, the tiny CPU configs that the
real Hydra configs are composed with, and importing a file that is no package's module."""

import importlib.util
from pathlib import Path

from nas import hydra_configs
from nas.space import SearchSpace

SPACES = hydra_configs.ROOT / "search_spaces"  # the shipped spaces

# A few seconds of work: 48-token recall, a handful of batches, one epoch each stage.
TINY_TASK = [
    "task.seq_len=48",
    "task.num_pairs=4",
    "task.num_queries=4",
    "task.num_keys=16",
    "task.num_values=16",
    "task.num_train=256",
    "task.num_val=64",
    "task.num_test=64",
    "task.batch_size=32",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
TINY = [*TINY_TASK, "trainer.max_epochs=1", "search.eval_batches=2"]  # for nas-search


def load_space(name: str) -> SearchSpace:
    """A shipped space by name: "tiny", "quickstart", "lra", ..."""
    return SearchSpace.from_yaml(SPACES / f"{name}.yaml")


def compose_config(name: str, run_dir: Path, overrides: list[str]):
    """The real config `name` ("search", "retrain", ...) writing into `run_dir`, its data beside it."""
    return hydra_configs.compose_config(
        name, [f"paths.output_dir={run_dir}", f"paths.data_dir={run_dir.parent / 'data'}", *overrides]
    )


def module_from_file(name: str, path: Path):
    """A Python file that is no package's module (a script of scripts/, an export's predict.py), imported."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
