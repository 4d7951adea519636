"""What the entry points share: where the configs are, the `nas_root` resolver, one-line errors."""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]  # the repository: configs/ and search_spaces/ live here
CONFIGS = str(ROOT / "configs")

OmegaConf.register_new_resolver("nas_root", lambda: str(ROOT), replace=True)
# ${nas_or:a,b}: a unless it is null (oc.select returns a null value instead of its default)
OmegaConf.register_new_resolver("nas_or", lambda value, default: default if value is None else value, replace=True)

log = logging.getLogger("nas")


def one_line_errors(command: str) -> Callable:
    """Bad input ends the command with one line on stderr and exit code 1, not a traceback."""

    def wrap(run: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(run)
        def checked(*args, **kwargs):
            try:
                return run(*args, **kwargs)
            except (ConfigError, FloatingPointError, FileNotFoundError) as err:
                fail(command, str(err))
            except MissingMandatoryValue as err:
                fail(command, f"missing value for '{err.full_key}': pass {err.full_key}=...")

        return checked

    return wrap


def fail(command: str, message: str) -> None:
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(1)
