"""Tasks, one file each, registered by name in `TASKS`: LightningDataModules with a metric.

Every module in this folder is imported here, so adding a task is adding one file.
"""

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path

from nas.errors import ConfigError
from nas.tasks.base import TASKS, Task

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task", "build", "build_task"]


def build(name: str, **kwargs) -> Task:
    """The task registered as `name`, built with its options (and data_dir)."""
    return TASKS.get(name)(**kwargs)


def build_task(record: object, data_dir: str | Path, source: str) -> Task:
    """The task a record names: `{"name": <registered name>, **options of its Config}`.

    The one way a task is built, from the config composed on the command line and from every
    record read back from disk (checkpoints, run folders, standalone jobs, `Task.record()`).
    Only a registered class can be built, and every option is a plain value of a field its
    Config declares: a key it does not declare, at any depth (Hydra's `_target_`, `_args_`,
    `_partial_` among them), stops with one line naming `source` and the key, so a file
    cannot choose code to run.
    """
    if not isinstance(record, Mapping):
        raise ConfigError(f"{source}: the task must be a mapping with a 'name', not a {type(record).__name__}")
    options = dict(record)
    name = options.pop("name", None)
    if name is None and "_target_" in options:
        raise ConfigError(
            f"{source}: key '_target_' is not accepted; a task is named by 'name' "
            f"(one of {', '.join(TASKS.names())}) and built from its options, never from a path"
        )
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(f"{source}: task name {str(name)[:60]!r} is not a task; known: {', '.join(TASKS.names())}")
    for key, value in options.items():
        nested = _first_nested_key(value, str(key))
        if nested is not None:
            raise ConfigError(
                f"{source}: key '{nested[:100]}' is not an option of task '{name}': its options are plain values"
            )
    try:
        return build(name, data_dir=data_dir, **options)
    except ConfigError as err:  # the task's own check (an unknown option, a wrong type): say where
        raise ConfigError(f"{source}: {err}") from None


def _first_nested_key(value: object, path: str) -> str | None:
    """The dotted path (from `path`) of the first key of a non-empty mapping nested anywhere
    in `value`, list items included, or None when it holds none."""
    stack = [(path, value)]
    while stack:  # iterative: a record nested 100,000 deep must not exhaust the recursion limit
        where, item = stack.pop()
        if isinstance(item, Mapping) and item:
            return f"{where}.{next(iter(item))}"
        if isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None
