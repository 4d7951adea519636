"""The one exception type for bad user input: the CLI prints its message as a single line."""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import reprlib
import types
import typing
from typing import Any


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
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in itertools.islice(x.items(), self.maxdict)]
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
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_whole(value: object, field: str, least: int) -> None:
    """One ConfigError line unless `value` is a whole number >= least (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{field}={excerpt(value)}: must be a whole number >= {least}")


_KINDS = {"positive": ("a finite number > 0", lambda v: v > 0),
          "non-negative": ("a finite number >= 0", lambda v: v >= 0),
          "fraction": ("a number in [0, 1)", lambda v: 0 <= v < 1),
          "probability": ("a number in [0, 1]", lambda v: 0 <= v <= 1)}


def check_number(value: object, field: str, kind: str) -> None:
    """One ConfigError line unless `value` is a finite number of `kind`: positive, non-negative,
    fraction or probability. inf and nan are refused for every kind: inf passes "> 0", and a
    learning rate or temperature of either ends training on a non-finite loss."""
    wanted, allowed = _KINDS[kind]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not allowed(value):
        raise ConfigError(f"{field}={excerpt(value)}: must be {wanted}")


def build_config(cls: type, options: dict[str, Any], what: str, path: str | None = None):
    """`cls(**options)` for a config dataclass, every bad option reported as one ConfigError line.

    Checks names and types first (a YAML value of the wrong type would otherwise reach a
    comparison in `__post_init__` and fail with a message that names no field), then lets the
    dataclass check values; its ValueError becomes a ConfigError prefixed with `what`
    (e.g. "attention 'local'" or "task 'text'").

    With `path` (e.g. "strategy"), each option is named by its path as the command line sets it
    (`strategy.penalty.weight=-1: must be ...`; `__post_init__` names its fields, the path goes
    in front), a field typed as a config dataclass is built the same way from a mapping (its
    path `<path>.<field>`), and a value that is absent without a default, or Hydra's "???", is
    one line saying it is missing.
    """
    fields = dataclasses.fields(cls)
    allowed = [f.name for f in fields]
    unknown = sorted(set(options) - set(allowed), key=str)
    if unknown:
        name = f"{path}.{unknown[0]}" if path else excerpt(unknown[0])
        raise ConfigError(f"unknown option {name} for {what}; "
                          f"allowed: {', '.join(allowed) or '(none)'}")
    hints = typing.get_type_hints(cls)
    options = dict(options)
    for f in fields:
        name, hint, where = f.name, hints[f.name], f"{path}.{f.name}"
        value = options.get(name, dataclasses.MISSING)
        if path and ((isinstance(value, str) and value == "???") or value is dataclasses.MISSING
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            raise ConfigError(f"{where} is missing: {what} needs it; pass {where}=<value>")
        if value is dataclasses.MISSING:
            continue
        if path and dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}={excerpt(value)}: must be a mapping of "
                                  f"{', '.join(g.name for g in dataclasses.fields(hint))}")
            options[name] = build_config(hint, value, what, where)
        elif not fits(value, hint):
            raise ConfigError(f"{where}={excerpt(value)}: must be {type_name(hint)}" if path else
                              f"{what}: option '{name}' must be {type_name(hint)}; got {excerpt(value)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}.{err}" if path else f"{what}: {err}") from None


def fits(value: Any, hint: Any) -> bool:
    """Whether a value parsed from YAML/JSON/the command line fits a field's annotation.

    bool is not accepted as a number (YAML reads `yes` as True), an int is accepted as a float,
    an os.PathLike as a string.
    Annotations other than plain scalars and their unions with None are not checked.
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:  # a path given as a Path object from Python is as good as its string
        return isinstance(value, (str, os.PathLike))
    if hint is bool:
        return isinstance(value, bool)
    return True


def type_name(hint: Any) -> str:
    """'an integer', 'a string or null', ... for an annotation `fits` checks."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
