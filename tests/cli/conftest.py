"""Compose the real configs with tiny CPU overrides, writing into tmp_path."""

from pathlib import Path

import pytest

from tests.helpers import TINY, TINY_TASK, compose_config  # noqa: F401  (TINY, TINY_TASK: still imported from here)


@pytest.fixture
def config(tmp_path):
    def make(name: str, *overrides: str, run_dir: Path | None = None):
        return compose_config(name, run_dir or tmp_path / "run", list(overrides))

    return make
