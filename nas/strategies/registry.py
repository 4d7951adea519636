"""The registry of search strategies."""

from nas.registry import Registry

STRATEGIES = Registry("strategy")
