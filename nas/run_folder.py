"""A run folder's bookkeeping: the lock a process holds while it works there (a second process
stops with one line naming the holder) and `status.json` (running, failed with the error, done),
which users and `resume=` read. Used by every command that writes a folder.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
from pathlib import Path

import filelock
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_only

from nas.atomic import atomic_write
from nas.errors import ConfigError

log = logging.getLogger("nas")


def is_rank_zero() -> bool:
    """Whether this process writes files and makes the decisions the other ranks receive: the
    only one, or rank 0 of a DDP run (the process group's rank once there is one, before that
    the rank Lightning reads from the launcher's environment). The one rank check in `nas`."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return rank_zero_only.rank == 0


def status_file(folder: Path, name: str = "run") -> Path:
    """Where `working_in(folder, name)` keeps the status: status.json in a run folder."""
    return Path(folder) / ("status.json" if name == "run" else f"{name}.status.json")


def read_status(folder: Path, name: str = "run") -> dict:
    """The status `working_in` wrote ({} when there is none or it is unreadable): `state`
    (running / failed / done), `pid`, `error`, `started`, `updated`."""
    try:
        status = json.loads(status_file(folder, name).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


@contextlib.contextmanager
def working_in(folder: Path, name: str = "run", lock: bool = True, resumed: bool = False):
    """Hold `folder`'s lock for the block and keep its status: running, then failed (with the
    error) or done. `name` prefixes the files (run.lock, run.pid, status.json for a run
    folder); without `lock` only the status is kept (evolution workers sharing a run). Under
    DDP rank 0 alone holds the lock and writes the status: the other ranks run the same
    command in the same folder by design. `resumed` (resume=) keeps the run's first start time
    and records this one as `resumed`."""
    folder = Path(folder)
    if not is_rank_zero():
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(folder, name) if lock else contextlib.nullcontext():
        old = read_status(folder, name)
        if old.get("state") == "running" and old.get("pid") not in (None, os.getpid()):
            log.info("the previous process in %s (pid %s) stopped without finishing", folder, old["pid"])
        # A done folder joined without the lock (an evolution worker on a finished study) keeps
        # its results until this process writes new ones at its end: it stays done meanwhile, and
        # if this process fails or is killed, rather than saying failed or running forever.
        joined_done = not lock and old.get("state") == "done"
        if not joined_done:
            write_status(folder, "running", name=name, resumed=resumed)
        try:
            yield
        except BaseException as err:
            if not joined_done:
                write_status(folder, "failed", error=" ".join(f"{type(err).__name__}: {err}".split()), name=name)
            raise
        write_status(folder, "done", name=name)


@contextlib.contextmanager
def run_lock(run_dir: Path, name: str = "run"):
    """Held while a process works in `run_dir`; a second process stops at once and names the
    holder's PID (in run.pid) instead of interleaving checkpoints with it. The lock is the
    kernel's (flock), so a killed holder releases it."""
    lock = filelock.FileLock(str(run_dir / f"{name}.lock"))
    pid_file = run_dir / f"{name}.pid"
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        holder = pid_file.read_text().strip() if pid_file.is_file() else "unknown"
        what = run_dir if name == "run" else run_dir / name.lstrip(".")
        raise ConfigError(f"{what} is in use by process {holder}; wait for it to end or stop it") from None
    try:
        atomic_write(pid_file, f"{os.getpid()}\n")
        yield
    finally:
        lock.release()


def write_status(run_dir: Path, state: str, error: str | None = None, name: str = "run", resumed: bool = False) -> None:
    """status.json: running / failed (with the error) / done, with the times, for users and resume:
    `started` when the run first started, `resumed` when a process last took it up again
    (absent if none did), `updated` now."""
    path = status_file(run_dir, name)
    old = read_status(run_dir, name)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if state == "running":  # a new run in this folder starts the clock again, a resumed one not
        started, last = (old.get("started", now), now) if resumed else (now, None)
    else:
        started, last = old.get("started", now), old.get("resumed")
    status = {"state": state, "started": started, "updated": now, "pid": os.getpid(), "error": error}
    if last:
        status["resumed"] = last
    atomic_write(path, json.dumps(status, indent=2) + "\n")
