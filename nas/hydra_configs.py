"""Where the Hydra configs are, the resolvers they use, and a command's config composed in
Python, for code that calls `nas.pipeline` directly as the commands do (studies, notebooks)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]  # the repository: configs/ and search_spaces/ live here
CONFIGS = str(ROOT / "configs")

OmegaConf.register_new_resolver("nas_root", lambda: str(ROOT), replace=True)
# ${nas_or:a,b}: a unless it is null (oc.select returns a null value instead of its default)
OmegaConf.register_new_resolver("nas_or", lambda value, default: default if value is None else value, replace=True)


def compose_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """configs/<name>.yaml ("search", "retrain", "export", "rank") with Hydra `overrides`, as
    `nas-<name>` composes it (without the `hydra` node: set `paths.output_dir` yourself)."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))
