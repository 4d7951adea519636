"""Where the Hydra configs are, the resolvers they use, the config groups written as dataclasses
(ConfigStore), and a command's config composed in Python, for code that calls `nas.pipeline`
directly as the commands do (studies, notebooks)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from nas.jobs.engine import JobsConfig
from nas.jobs.job import Budget
from nas.strategies import STRATEGIES
from nas.tasks import TASKS
from nas.training.calibrate import Calibration

ROOT = Path(__file__).resolve().parents[1]  # the repository: configs/ and search_spaces/ live here
CONFIGS = str(ROOT / "configs")

OmegaConf.register_new_resolver("nas_root", lambda: str(ROOT), replace=True)
# ${nas_or:a,b}: a unless it is null (oc.select returns a null value instead of its default)
OmegaConf.register_new_resolver("nas_or", lambda value, default: default if value is None else value, replace=True)
# ${nas_unless:a,b}: b unless a is set (configs/hydra/default.yaml: no .hydra/ written on resume=)
OmegaConf.register_new_resolver("nas_unless", lambda value, default: None if value else default, replace=True)


def defaults(cls: type) -> dict:
    """A config dataclass's defaults as plain data; "???" (Hydra's missing) where it has none."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = "???"
        values[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return values


def register_configs() -> None:
    """Each task's and strategy's Config, the one source of its defaults, as the Hydra options
    `task=<name>` and `strategy=<name>`: plain (untyped) nodes, so Hydra composes any value and
    `errors.build_config` reports a bad one in one line, naming the option. nas-rank's `budget`,
    `calibrate` and `jobs` sections are `Budget`'s, `Calibration`'s and `JobsConfig`'s defaults
    the same way."""
    store = ConfigStore.instance()
    for group, registry in (("task", TASKS), ("strategy", STRATEGIES)):
        for name in registry.names():
            store.store(group=group, name=name, node={"name": name, **defaults(registry.get(name).Config)})
    store.store(group="budget", name="default", node=defaults(Budget))
    store.store(group="calibrate", name="default", node=defaults(Calibration))
    store.store(group="jobs", name="default", node=defaults(JobsConfig))


register_configs()


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """configs/<name>.yaml ("search", "retrain", "export", "rank") with Hydra `overrides`, as
    `nas-<name>` composes it (without the `hydra` node: set `paths.output_dir` yourself)."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))
