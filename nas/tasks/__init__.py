"""Tasks, one file each, registered by name in `TASKS`: LightningDataModules with a metric.

Every module in this folder is imported here, so adding a task is adding one file.
"""
import importlib
import pkgutil

from nas.tasks.base import TASKS, Task

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task", "build"]


def build(name: str, **kwargs) -> Task:
    """The task registered as `name`, built with its options (and data_dir)."""
    return TASKS.get(name)(**kwargs)
