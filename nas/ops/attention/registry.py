"""The registry of attention ops, filled by the op files' `@ATTENTION.register(name)`."""

from nas.registry import Registry

ATTENTION = Registry("attention")
