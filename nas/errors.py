"""The one exception type for bad user input: the CLI prints its message as a single line."""

from __future__ import annotations

import dataclasses
import itertools
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException


class ConfigError(ValueError):
    """Bad input from the user: an unknown name, an arch outside the space, a malformed file."""


class _Short(reprlib.Repr):
    """reprlib's bounded repr (a few items per level, a few levels), with dicts in insertion
    order as repr shows them (reprlib sorts them)."""

    def __init__(self, limit: int):
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple, self.maxset = 3, 4, 6, 6, 6
        self.maxstring = self.maxlong = self.maxother = limit

    def repr_dict(self, x, level):
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [
            f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
            for k, v in itertools.islice(x.items(), self.maxdict)
        ]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"

    def repr_int(self, x, level):
        try:
            return super().repr_int(x, level)
        except ValueError:  # past Python's 4300-digit limit for printing an int
            return f"<an integer of {x.bit_length()} bits>"


def excerpt(value: object, limit: int = 60) -> str:
    """repr(value) for a message, at most `limit` characters: a value read from a file may be a
    megabyte string or a structure that aliases expand a billion times, and printing it whole
    would take the memory the message was meant to save."""
    text = _Short(limit).repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_whole(value: object, field: str, least: int) -> None:
    """One ConfigError line unless `value` is a whole number >= least (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{field}={excerpt(value)}: must be a whole number >= {least}")


_KINDS = {
    "positive": ("a finite number > 0", lambda v: v > 0),
    "non-negative": ("a finite number >= 0", lambda v: v >= 0),
    "fraction": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "probability": ("a number in [0, 1]", lambda v: 0 <= v <= 1),
}


def check_number(value: object, field: str, kind: str) -> None:
    """One ConfigError line unless `value` is a finite number of `kind`: positive, non-negative,
    fraction or probability. inf and nan are refused for every kind: inf passes "> 0", and a
    learning rate or temperature of either ends training on a non-finite loss."""
    wanted, allowed = _KINDS[kind]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not allowed(value):
        raise ConfigError(f"{field}={excerpt(value)}: must be {wanted}")


def build_config(cls: type, options: dict[str, Any], what: str, path: str | None = None):
    """`cls(**options)` for a config dataclass, typed by OmegaConf, every bad option one ConfigError line.

    OmegaConf's structured config checks names and types (bool is not an int, 1.5 is not an
    int, 'maybe' is not a bool, a field typed as a config dataclass takes a mapping); its error
    becomes one line built from the key and the field's annotation, the value shown by
    `excerpt` (OmegaConf's own text repr()s the whole value). Then the dataclass checks
    values; its ValueError becomes a ConfigError prefixed with `what` (e.g. "attention 'local'").

    With `path` (e.g. "strategy"), each option is named by its path as the command line sets it
    (`strategy.penalty.weight=-1: must be ...`; `__post_init__` names its fields, the path goes
    in front), and a value absent without a default, or Hydra's "???", is one line saying it is
    missing.
    """
    if _deeper_than(options, _DEPTH):  # OmegaConf recurses: a record 100,000 deep would exhaust the stack
        raise ConfigError(f"{what}: options nested more than {_DEPTH} levels deep")
    try:
        merged = OmegaConf.merge(_writable(OmegaConf.structured(cls)), options)
        values = OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:  # also a key that is not a string, or a value of no YAML type
        raise ConfigError(_omegaconf_line(err, cls, options, what, path)) from None
    return _build(cls, values, options, what, path)


def _as_given(value: Any, given: Any) -> Any:
    """The value as the user gave it where OmegaConf made an int a float (-1 for a float field
    stays -1, as Python's typing allows, and a message shows -1, not -1.0)."""
    if isinstance(value, float) and isinstance(given, int) and not isinstance(given, bool) and value == given:
        return given
    if isinstance(value, dict) and isinstance(given, Mapping):
        return {k: _as_given(v, given.get(k)) for k, v in value.items()}
    return value


def _build(cls: type, values: dict[str, Any], given: Mapping, what: str, path: str | None):
    """The dataclass of checked values, nested configs first, each `__post_init__`'s ValueError
    one line named by its path (OmegaConf.to_object would not say which config raised it)."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        part = given.get(name) if isinstance(given, Mapping) else None
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            values[name] = _build(
                hints[name], value, part if isinstance(part, Mapping) else {}, what, f"{path}.{name}" if path else None
            )
        else:
            values[name] = _as_given(value, part)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}.{err}" if path else f"{what}: {err}") from None


_DEPTH = 32


def _writable(node: DictConfig) -> DictConfig:
    """The schema of a frozen dataclass with its read-only flags off, at every level, so that
    options merge into it (to_object still builds the frozen dataclass)."""
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            _writable(child)
    return node


def _deeper_than(value: object, limit: int) -> bool:
    """Whether mappings and lists nest more than `limit` levels (iterative, for any depth)."""
    stack = [(value, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (Mapping, list, tuple)):
            if depth >= limit:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, Mapping) else value))
    return False


def _omegaconf_line(err: OmegaConfBaseException, cls: type, options: dict, what: str, path: str | None) -> str:
    """One line for OmegaConf's error, named by the key's path in `options`."""
    keys = [str(k) for k in str(err.full_key or err.key or "").split(".") if k]
    owner, value = cls, options
    for key in keys[:-1]:  # down to the config that holds the bad key
        owner = typing.get_type_hints(owner).get(key) if dataclasses.is_dataclass(owner) else None
        value = value.get(key, {}) if isinstance(value, Mapping) else {}
    name = keys[-1] if keys else ""
    where = ".".join([path, *keys]) if path else name
    if isinstance(err, MissingMandatoryValue) or (isinstance(value, Mapping) and value.get(name) == "???"):
        return f"{where} is missing: {what} needs it; pass {where}=<value>"
    fields = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else []
    if isinstance(err, ConfigKeyError) or name not in fields:
        shown = where if path else excerpt(name)
        return f"unknown option {shown} for {what}; allowed: {', '.join(fields) or '(none)'}"
    hint = typing.get_type_hints(owner)[name]
    got = value.get(name) if isinstance(value, Mapping) else value
    wanted = type_name(hint)
    return (
        f"{where}={excerpt(got)}: must be {wanted}"
        if path
        else f"{what}: option '{name}' must be {wanted}; got {excerpt(got)}"
    )


def type_name(hint: Any) -> str:
    """'an integer', 'a string or null', ... for a field's annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {', '.join(f.name for f in dataclasses.fields(hint))}"
    if typing.get_origin(hint) in (dict, Mapping):
        return "a mapping"
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
