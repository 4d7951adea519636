"""What the entry points share: where the configs are, the `nas_root` resolver, one-line errors."""
from __future__ import annotations

import functools
import logging
import sys
import warnings
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

# Notices every run printed that name nothing the user can act on. The first two come from
# Lightning itself (an advert; Lightning's pytree call deprecated by torch), the third from
# tiny runs with fewer batches than trainer.log_every_n_steps, where the epoch's logs still come.
_NOISE = [r"`isinstance\(treespec, LeafSpec\)` is deprecated",
          r"The number of training batches \(\d+\) is smaller than the logging interval"]
_TIP = "💡 Tip: For seamless cloud logging"


def quiet() -> None:
    """Silence exactly the routine notices above, nothing broader."""
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(getattr(f, "nas_tip", False) for f in lightning.filters):
        tip = logging.Filter()
        tip.filter = lambda record: not str(record.getMessage()).startswith(_TIP)
        tip.nas_tip = True
        lightning.addFilter(tip)


def one_line_errors(command: str) -> Callable:
    """Bad input ends the command with one line on stderr and exit code 1, not a traceback."""

    def wrap(run: Callable[..., object]) -> Callable[..., object]:
        @functools.wraps(run)
        def checked(*args, **kwargs):
            quiet()
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
