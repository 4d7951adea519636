"""Search strategies, one file each, registered by name in `STRATEGIES`."""

import importlib
import pkgutil

from nas.results import Candidate, SearchResult
from nas.strategies.base import (
    SearchContext,
    SearchReport,
    SearchSetting,
    Strategy,
    build_strategy,
)
from nas.strategies.registry import STRATEGIES

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "STRATEGIES",
    "Candidate",
    "SearchContext",
    "SearchReport",
    "SearchResult",
    "SearchSetting",
    "Strategy",
    "build_strategy",
]
