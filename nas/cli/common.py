"""What the entry points share: where the configs are, the `nas_root` resolver, one-line errors."""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable

from filelock import Timeout
from omegaconf import DictConfig, OmegaConf
from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from nas.cli.checks import validate
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
                if args and isinstance(args[0], DictConfig):
                    validate(args[0], command)
                return run(*args, **kwargs)
            except (ConfigError, FloatingPointError, FileNotFoundError) as err:
                fail(command, str(err))
            except InstantiationException as err:  # the project's own message, not Hydra's wrapper
                cause = err.__cause__
                fail(command, one_line(cause if isinstance(cause, (ConfigError, ValueError, TypeError)) else err))
            except Timeout as err:
                fail(command, str(err))
            except MissingMandatoryValue as err:
                fail(command, f"missing value for '{err.full_key}': pass {err.full_key}=...")

        return checked

    return wrap


def one_line_text(message: str) -> str:
    return " ".join(str(message).split())


def one_line(err: BaseException) -> str:
    """An exception's message on one line (Hydra's and OmegaConf's span several)."""
    return " ".join(str(err).split())


def fail(command: str, message: str) -> None:
    print(f"{command}: error: {one_line_text(message)}", file=sys.stderr)
    sys.exit(1)
