"""What the entry points share: where the configs are, the `nas_root` resolver, the up-front
checks of a config and one-line errors."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nas.atomic import atomic_write
from nas.cpu_allocator import reuse_freed_memory
from nas.errors import ConfigError, check_number, check_whole, excerpt
from nas.hydra_configs import CONFIGS  # noqa: F401  (for the commands; registers the resolvers and config groups)
from nas.pipeline import INITS
from nas.run_folder import is_rank_zero, read_status
from nas.safe_load import read_yaml

log = logging.getLogger("nas")

# Notices every run printed that name nothing the user can act on, both from Lightning itself:
# an advert, and Lightning's own pytree call that torch deprecated. (The ones whose cause was
# ours are resolved there: the log interval in pipeline._trainer, the checkpoint folder on
# resume in AtomicCheckpoint, the plot labels in viz.)
_NOISE = [r"`isinstance\(treespec, LeafSpec\)` is deprecated"]
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
            reuse_freed_memory()  # large activations are not page-faulted in again every step
            try:
                if args and isinstance(args[0], DictConfig):
                    validate(args[0], command)
                return run(*args, **kwargs)
            except (ConfigError, FloatingPointError, FileNotFoundError) as err:
                fail(command, str(err))
            except InstantiationException as err:  # the project's own message, not Hydra's wrapper
                cause = err.__cause__
                fail(command, one_line(cause if isinstance(cause, (ConfigError, ValueError, TypeError)) else err))
            except MissingMandatoryValue as err:
                fail(command, f"missing value for '{err.full_key}': pass {err.full_key}=...")
            except OSError as err:  # a full disk, a file-size limit (ulimit -f), a folder not writable
                fail(
                    command,
                    f"{err.filename}: {err.strerror or err}"
                    if err.filename
                    else f"writing under {_output(args)}: {err.strerror or err}",
                )

        return checked

    return wrap


def _output(args: tuple) -> str:
    """Where the command writes, for an OSError that names no file (a write to a full disk)."""
    cfg = args[0] if args and isinstance(args[0], DictConfig) else None
    where = cfg is not None and (cfg.get("out") or OmegaConf.select(cfg, "paths.output_dir", default=None))
    return str(where) if where else "its output folder"


def one_line(err: object) -> str:
    """A message on one line (Hydra's and OmegaConf's span several)."""
    return " ".join(str(err).split())


def fail(command: str, message: str) -> None:
    print(f"{command}: error: {one_line(message)}", file=sys.stderr)
    sys.exit(1)


# -- up-front checks: Hydra accepts any value its grammar parses (trainer.max_epochs=abc,
# seed=1e3) and creates a resume= folder that does not exist; these stop such input before any
# training with one line naming the field and the allowed values.
# trainer fields that must be whole numbers, with the smallest allowed value; max_epochs=0
# would let an untrained supernet pick the arch, so it must be at least 1
_TRAINER_INTS = {"max_epochs": 1, "devices": 1, "num_nodes": 1, "log_every_n_steps": 1, "num_sanity_val_steps": 0}


# optimizer and schedule fields (the optimizers would reject them mid-run with a traceback):
# (group, field) -> the smallest whole number, or "positive" / "non-negative" / "fraction" for
# numbers; None passes where the field may be off (a clip value)
_NUMBERS = {
    ("search", "lr"): "positive",
    ("search", "weight_decay"): "non-negative",
    ("search", "grad_clip"): "positive",
    ("search", "eval_batches"): 1,
    ("retrain", "lr"): "positive",
    ("retrain", "weight_decay"): "non-negative",
    ("retrain", "warmup_steps"): 0,
    ("retrain", "patience"): 1,
    ("retrain", "distill"): "fraction",
    ("retrain", "gradient_clip_val"): "positive",
}
_OFF = {("search", "grad_clip"), ("retrain", "gradient_clip_val")}
# switches: YAML reads `maybe` as a string and `2` as a number, which an `if` would take for true
_FLAGS = (
    "retrain.enabled",
    "export.enabled",
    "export.overwrite",
    "export.quantize",
    "overwrite",
    "quantize",
    "search_pick",
)
_UNSET = object()


def validate(cfg: DictConfig, command: str) -> None:
    """Raise ConfigError (one line naming the field) for a value no stage would accept."""
    if "seed" in cfg:
        check_whole(cfg.seed, "seed", 0)
    trainer = cfg.get("trainer")
    if trainer is not None:
        for field, least in _TRAINER_INTS.items():
            if field in trainer:
                check_whole(OmegaConf.select(trainer, field), f"trainer.{field}", least)
    retrain = cfg.get("retrain")
    if retrain is not None and "max_epochs" in retrain:
        check_whole(retrain.max_epochs, "retrain.max_epochs", 1)
    for (group, field), rule in _NUMBERS.items():
        section = cfg.get(group)
        if section is None or field not in section:
            continue
        value = OmegaConf.select(section, field)
        if value is None and (group, field) in _OFF:
            continue
        if isinstance(rule, int):
            check_whole(value, f"{group}.{field}", rule)
        else:
            check_number(value, f"{group}.{field}", rule)
    for key in _FLAGS:
        value = OmegaConf.select(cfg, key, default=_UNSET)
        if value is not _UNSET and not isinstance(value, bool):
            raise ConfigError(f"{key}={excerpt(value)}: must be true or false")
    init = OmegaConf.select(cfg, "retrain.init", default=_UNSET)
    if init is not _UNSET and init not in INITS:  # here, not after a whole search has trained
        raise ConfigError(f"retrain.init={excerpt(init)}: allowed: {', '.join(INITS)}")
    _check_run_folder(cfg)
    resume = cfg.get("resume")
    if resume and command in ("nas-search", "nas-retrain"):
        folder = Path(str(resume))
        if not ((folder / "checkpoints").is_dir() or (folder / "status.json").is_file()):
            raise ConfigError(
                f"resume={resume}: not a run folder (no checkpoints/ in it); pass the folder a previous run printed"
            )
    out = cfg.get("out")
    if out and command == "nas-export":
        parent = Path(str(out)).parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"out={out}: {parent} is a file, not a folder")
        here = Path.cwd().resolve()  # the export is renamed into place: never over this folder
        if Path(str(out)).resolve() in (here, *here.parents):
            raise ConfigError(f"out={out}: the current folder or one above it; name a folder of its own for the export")
    if resume and command in ("nas-search", "nas-retrain"):  # last: it rewrites .hydra/ once all else passed
        check_resume(cfg, command)


# -- resume= continues a run as it was started. Hydra writes no .hydra/ for a resume
# (configs/hydra/default.yaml), so .hydra/config.yaml still holds the settings the run started
# with when the resume is checked against them; an accepted resume then rewrites it, as Hydra would.
# What a resume must keep: what decides the weights trained so far. Not the hardware (a run may
# move from a GPU to the CPU), logging, storage or where files go. trainer.max_epochs is kept too:
# schedules span the whole run (GDAS's temperature, DARTS's softmax temperature, retraining's
# cosine), so a longer run is a new run.
_TRAINED = (
    "seed",
    "sharing",
    "few_shot",
    "few_shot_from",
    "task",
    "space",
    "strategy",
    "search",
    "retrain",
    "trainer.max_epochs",
)
# read only once training is over, so a resume may change them: which arch to take and whether to
# retrain (nas-decide, nas/decide_again.py, decides a finished search again with another strategy.decide)
_AFTER = ("search.eval_batches", "retrain.enabled")
# (DARTS's, GDAS's and ENAS's constraints limit only the final pick; random's limit what it trains)
_AFTER_STRATEGY = {
    "darts": ("decide", "constraints"),
    "gdas": ("decide", "constraints"),
    "random": ("samples",),
    "enas": ("final_samples", "constraints"),
    "evolution": (
        "population",
        "generations",
        "mutation_prob",
        "crossover_prob",
        "cost",
        "constraints",
        "study_name",
        "heartbeat_interval",
        "grace_period",
    ),
}
# evolution workers join a run's study with their own seed and without retraining (README)
_WORKER = ("seed", "retrain")


def check_resume(cfg: DictConfig, command: str) -> None:
    """Refuse, in one line naming each changed key with its old and new value, a `resume=` that
    would continue a run with other training settings (or by another command) than it started
    with; then, for a run that is not done, record the accepted config in .hydra/ as Hydra
    would. A folder without .hydra/config.yaml (a run composed in Python) is only warned about."""
    folder = Path(str(cfg.resume))
    saved = folder / ".hydra" / "config.yaml"
    if not saved.is_file():
        log.warning(
            "resume=%s: no .hydra/config.yaml in it, so the settings the run was started with are not checked",
            cfg.resume,
        )
        return
    started = read_yaml(saved, "the run's config")
    if not isinstance(started, dict):
        raise ConfigError(f"{saved}: not a run's config (a mapping of settings)")
    wrote = "nas-search" if "strategy" in started else "nas-retrain"
    if wrote != command:
        raise ConfigError(
            f"resume={cfg.resume}: a run folder of {wrote}, not of {command}: resume it with {wrote} resume="
        )
    changed = changed_settings(started, OmegaConf.to_container(cfg, resolve=False), command)
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigError(
            f"resume={cfg.resume}: the run was started with other settings ({saved}): {shown}; "
            "a resume continues a run as it started: drop these overrides, or start a new "
            "run to train with them (also to train longer)"
        )
    if read_status(folder).get("state") != "done":  # a done run is not resumed (see `finished`)
        _record_config(cfg)


def changed_settings(started: dict, now: dict, command: str) -> list[str]:
    """'key old -> new' for each training setting (see _TRAINED) that differs, in the order of
    the run's config; "(unset)" where one side lacks the key."""
    name = [c["strategy"].get("name") if isinstance(c.get("strategy"), dict) else None for c in (started, now)]
    free = list(_AFTER)
    if name[0] == name[1]:
        free += [f"strategy.{option}" for option in _AFTER_STRATEGY.get(name[1], ())]
        free += list(_WORKER) if name[1] == "evolution" else []
    if command == "nas-retrain":  # retraining runs retrain.max_epochs
        free.append("trainer.max_epochs")
    old, new = _flat(started), _flat(now)
    changed = []
    for key in dict.fromkeys([*old, *new]):
        if not _under(key, _TRAINED) or _under(key, free) or old.get(key, _UNSET) == new.get(key, _UNSET):
            continue
        shown = [excerpt(v) if v is not _UNSET else "(unset)" for v in (old.get(key, _UNSET), new.get(key, _UNSET))]
        changed.append(f"{key} {shown[0]} -> {shown[1]}")
    return changed


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _flat(tree: object, prefix: str = "") -> dict:
    """A nested mapping as {'a.b.c': value}; an empty mapping is a value of its own."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _record_config(cfg: DictConfig) -> None:
    """What Hydra writes into .hydra/ at a start, written for an accepted resume (Hydra writes
    nothing then, so that a refused one leaves the run's record as it was)."""
    if not HydraConfig.initialized() or not is_rank_zero():  # composed in Python; DDP's other ranks
        return
    hydra = HydraConfig.get()
    if hydra.output_subdir is not None:  # Hydra wrote it already (hydra.output_subdir set by hand)
        return
    folder = Path(hydra.runtime.output_dir) / ".hydra"
    folder.mkdir(exist_ok=True)
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", HydraConfig.instance().cfg),
        ("overrides.yaml", hydra.overrides.task),
    ):
        atomic_write(folder / name, OmegaConf.to_yaml(node))  # whole files, also with workers writing at once


def finished(cfg: DictConfig, command: str) -> bool:
    """Whether `resume=` names a run whose status.json says done. Such a run has nothing left
    to resume, so one line says so (and where its results are) and the command ends with exit
    code 0 instead of training again; to train longer or again, start a new run. Evolution
    workers joining a finished run's study are the exception: they add trials by design. A worker
    stops after the search (retrain.enabled=false); a command that would retrain and export again
    would find the run's own retrained model and export in its way, so it is done like any other."""
    resume = cfg.get("resume")
    worker = (
        command == "nas-search"
        and cfg.strategy.get("name") == "evolution"
        and not OmegaConf.select(cfg, "retrain.enabled", default=True)
    )
    if not resume or worker:
        return False
    status = read_status(Path(str(resume)))
    if status.get("state") != "done":
        return False
    where = "summary.txt, best_arch.yaml" if command == "nas-search" else "checkpoints/"
    print(
        f"{command}: {resume} is already done (status.json, {status.get('updated', '?')}); "
        f"nothing to resume: its results are in {where}. Start a new run to train again."
    )
    return True


def _check_run_folder(cfg: DictConfig) -> None:
    """paths.output_dir set apart from Hydra's run folder would leave the run without its
    .hydra/config.yaml, which resume= and nas-rank read: the folder is chosen with hydra.run.dir."""
    paths = cfg.get("paths")
    if not HydraConfig.initialized() or paths is None or "output_dir" not in paths:
        return  # composed in Python (scripts, tests): the caller owns the folder
    hydra_dir = HydraConfig.get().runtime.output_dir
    if Path(str(paths.output_dir)).resolve() != Path(hydra_dir).resolve():
        raise ConfigError(
            f"paths.output_dir={paths.output_dir}: the run folder is Hydra's ({hydra_dir}); "
            f"choose it with hydra.run.dir={paths.output_dir}"
        )
