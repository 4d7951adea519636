"""A tiny name -> class registry; lookup errors list the known names."""

from collections.abc import Callable
from typing import TypeVar

from nas.errors import ConfigError

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # what the names are, for error messages: "attention", "task", ...
        self._items: dict[str, type] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = cls
            cls.name = name
            return cls

        return add

    def get(self, name: str) -> type:
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
