"""The independent references the mixers are checked against.

flash-linear-attention's plain-PyTorch recurrences (the fla-core package, `fla/ops/<op>/naive.py`,
and `fla/modules/long_conv.py` for Hyena's FFT convolution) are loaded by path: importing the
`fla` package would import Triton, and these files need only torch and einops. Without fla-core
the tests that need it skip, saying so.
"""

import functools
import importlib.util
from importlib import metadata
from pathlib import Path

import pytest

FLA_VERSION = "0.6.0"  # the version the dev extra pins and these tests were checked against


@functools.cache
def _load(relative: str):
    spec = importlib.util.find_spec("fla")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None, "fla-core is not installed (pip install -e '.[dev]'): no flash-linear-attention reference"
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    found = importlib.util.spec_from_file_location(f"fla_reference_{relative.replace('/', '_')[:-3]}", path)
    module = importlib.util.module_from_spec(found)
    try:
        found.loader.exec_module(module)
    except (ImportError, FileNotFoundError) as error:
        return None, f"fla-core {metadata.version('fla-core')}: cannot load {relative} without Triton ({error})"
    return module, None


def fla(relative: str):
    """The fla-core file `relative` (e.g. "ops/gla/naive.py") as a module, or skip the test."""
    module, why = _load(relative)
    if module is None:
        pytest.skip(why)
    return module
