"""Loading files a user may have been sent, without running code from them and within bounds.

`torch.load(weights_only=True)` (https://pytorch.org/docs/stable/generated/torch.load.html)
unpickles only tensors and plain types, so a crafted `__reduce__` cannot run. Every LongNAS
checkpoint is read through `read_checkpoint`, including the ones handed to Lightning to
resume from: Lightning's own load is called with `weights_only=True` as well, and the file is
verified here first so that a bad file is one ConfigError line naming it, not a traceback.

Every YAML and JSON file that may come from someone else (arch and space files, `archs=` lists,
an export's records, standalone results) is read by `read_yaml` / `read_json`, which bound what
a few hundred crafted bytes could otherwise cost: the size, the nesting, and the values YAML
aliases expand to ("billion laughs", https://en.wikipedia.org/wiki/Billion_laughs_attack).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.errors import ConfigError, excerpt

# the export's schema checker, kept in predict.py because that file runs without nas
from nas.predict import InputError, check

# Our YAML and JSON files are KiB: an arch of the deepest space (1024 layers) is 50 KiB.
MAX_BYTES = 4 * 2**20
# Nesting levels; our files nest at most 5 (an archs list: list, arch, layers, layer, value).
MAX_NESTING = 100
# YAML values, aliases counted in full: a 1024-layer arch has 7,200; PyYAML (pure Python) takes
# about 2 s and 75 MB to compose 100,000, and 20 s and 600 MB for a million.
MAX_NODES = 100_000


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """The checkpoint at `path` as a dict, loaded with weights_only=True on the CPU.

    Raises:
        ConfigError: one line naming `what` and the file, if it is missing, empty, truncated,
            not a torch file, holds a pickled object other than tensors and plain types, or is
            not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{what} {path}: the file is empty")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a zip, truncated, or a pickled object weights_only refuses
        text = str(err).strip()
        reason = text.splitlines()[0] if text else type(err).__name__
        raise ConfigError(f"{what} {path}: cannot be read as a torch checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{what} {path}: holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def read_text(path: str | Path, what: str = "", limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes, or one ConfigError line naming
    `what` and the file (missing, not a regular file, too large, not UTF-8, binary)."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if not path.is_file():  # also /dev/zero, a FIFO or a folder: no bound on what they yield
        raise ConfigError(f"{name}: {'not a file' if path.exists() else 'no such file'}")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # not stat's size alone: the file may grow meanwhile
    except OSError as err:
        raise ConfigError(f"{name}: cannot read ({err.strerror})") from None
    if len(data) > limit:
        raise ConfigError(f"{name}: {path.stat().st_size:,} bytes, more than such a file may be ({limit // 2**20} MiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if "\0" in text:
        raise ConfigError(f"{name}: a binary file, not text (a NUL byte at byte {data.index(0)})")
    return text


def read_yaml(path: str | Path, what: str = "") -> Any:
    """The YAML document of a file, read within the bounds above; a repeated key, an alias
    inside its own anchor, a syntax error or a bad value is one ConfigError line naming
    `what` and the file."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    text = read_text(path, what)
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        problem = (err.problem or str(err).splitlines()[0])[:200]  # it may quote a name of any length
        kind = ":" if isinstance(err, _TooLarge) else " malformed YAML:"
        raise ConfigError(f"{name}:{where}{kind} {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: malformed YAML: {str(err).splitlines()[0]}") from None
    except ValueError as err:  # a constructor's: an integer of over 4300 digits, a date 2024-13-45
        raise ConfigError(f"{name}: malformed YAML: {str(err).split(':')[0]}") from None


def read_json(path: str | Path, what: str = "", schema: Any = None) -> Any:
    """The JSON document of a file, read within the bounds above, or one ConfigError line; with
    `schema` (as `nas.predict.check` takes it, e.g. MODEL_SCHEMA) it holds only what that
    declares: any other key (a Hydra `_target_` included) is refused naming the file and key."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    data = parse_json(read_text(path, what), name)
    if schema is not None:
        try:
            check(data, schema, name)
        except InputError as err:
            raise ConfigError(str(err)) from None
    return data


def parse_json(text: str, name: str) -> Any:
    """`text` as JSON nested at most MAX_NESTING deep (json.loads recurses per level, so the
    depth is counted first), or one ConfigError line starting with `name`."""
    depth = 0
    for bracket in _BRACKETS.sub("", _JSON_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_NESTING:
            raise ConfigError(f"{name}: nested more than {MAX_NESTING} levels deep, more than such a file may be")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{name}: malformed JSON: {err.msg} (line {err.lineno} column {err.colno})") from None
    except ValueError as err:  # an integer of over 4300 digits
        raise ConfigError(f"{name}: malformed JSON: {str(err).split(':')[0]}") from None


_JSON_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # brackets inside strings do not nest
_BRACKETS = re.compile(r"[^\[\]{}]+")  # everything but brackets


class _TooLarge(yaml.MarkedYAMLError):
    """A document past MAX_NESTING or MAX_NODES."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last silently),
    and counts while composing, before anything recurses or expands: the nesting, and the values
    with every alias counted as the whole value it names (so anchors and merge keys still work,
    but a billion laughs stops at MAX_NODES)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0  # levels open above the node being composed
        self.values = 0  # values so far, aliases expanded
        self.expanded = {}  # id(node) -> (values, levels) of that node, aliases expanded

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.depth >= MAX_NESTING:  # before PyYAML's composer recurses any deeper
            raise _TooLarge(
                None, None, f"nested more than {MAX_NESTING} levels deep, more than such a file may be", mark
            )
        alias = self.check_event(yaml.AliasEvent)
        self.depth += 1
        node = super().compose_node(parent, index)
        self.depth -= 1
        if alias and id(node) not in self.expanded:
            raise _TooLarge(None, None, "an alias inside its own anchor", mark)
        if not alias:
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [child for pair in node.value for child in pair]
                if isinstance(node, yaml.MappingNode)
                else []
            )
            sizes = [self.expanded[id(child)] for child in children]
            self.expanded[id(node)] = (1 + sum(v for v, _ in sizes), 1 + max((l for _, l in sizes), default=0))
        values, levels = self.expanded[id(node)]
        self.values += values if alias else 1
        if self.values > MAX_NODES:
            raise _TooLarge(
                None,
                None,
                f"more than {MAX_NODES:,} values (aliases counted in full), more than such a file may hold",
                mark,
            )
        if self.depth + levels > MAX_NESTING:
            raise _TooLarge(
                None,
                None,
                f"nested more than {MAX_NESTING} levels deep with its aliases expanded, more than such a file may be",
                mark,
            )
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys written beside it override the merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {excerpt(key)}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)
