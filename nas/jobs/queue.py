"""The work list of `nas-rank`'s standalone trainings, run as independent, resumable jobs by
processes and machines sharing one folder; what a job trains is `train_fn`'s business
(`nas.training.standalone.train`).

A job's result is one JSON file named by a hash of everything that determines it (arch, seed,
budget, task), written atomically: a finished job is never run again, whatever killed the run.
A job is claimed first by creating `<id>.claim` with O_EXCL, so several processes (`workers=K`)
or machines sharing the folder never train the same job twice. While it trains, its process
touches the claim every minute: a claim of another machine left untouched for
`STALE_CLAIM_SECONDS` belonged to a machine that died, and is taken over. A job in training may
keep checkpoints in `in_progress/<id>.ckpt*`; they go once its result is written.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.atomic import atomic_write
from nas.cpu_allocator import reuse_freed_memory
from nas.errors import ConfigError, check_number, check_whole
from nas.metrics import METRICS
from nas.safe_load import read_json

log = logging.getLogger("nas")


HEARTBEAT_SECONDS = 60.0  # how often a process touches the claims it holds
# another host's claim untouched this long: its machine died (10 missed heartbeats, also room for
# clocks that differ between machines)
STALE_CLAIM_SECONDS = 600.0


@dataclass(frozen=True)
class Budget:
    """One equal training budget for every arch (no early stopping)."""

    max_epochs: int = 8  # epochs over the task's training set
    lr: float = 3.0e-3  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 0 at the end of the budget
    gradient_clip_val: float = 1.0  # gradient norm clip (0: off)

    def __post_init__(self):
        check_whole(self.max_epochs, "max_epochs", 1)
        check_whole(self.warmup_steps, "warmup_steps", 0)
        check_number(self.lr, "lr", "positive")  # lr 0 would train nothing, and rank it all the same
        for name in ("weight_decay", "gradient_clip_val"):
            check_number(getattr(self, name), name, "non-negative")


@dataclass(frozen=True)
class Job:
    """One standalone training: everything a fresh process needs, as plain data."""

    model: dict  # ModelSpec.to_dict(): the arch, its space and the task's shape
    task: dict  # the task's record: its registered name and options (`Task.record()`)
    data_dir: str  # where the task's generated data is cached
    seed: int  # the training seed
    budget: Budget
    trainer: dict  # Lightning Trainer options: accelerator, devices, precision
    # `nas.ops.attention.revisions` of the arch's ops: what they compute, as of this code
    op_revisions: dict = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable across runs and machines: the same arch, seed, budget and task, the same id.

        An op of the arch past its first revision is part of the key too, so a result cached
        before the op changed is trained again rather than reused; ops that never changed add
        nothing, so their results keep the ids they had before revisions existed. The shape
        follows from the task, so it is left out: ids stay those of jobs from before `ModelSpec`.
        """
        key = {
            "arch": self.model["arch"],
            "space": self.model["space"],
            "task": self.task,
            "seed": self.seed,
            "budget": dataclasses.asdict(self.budget),
        }
        if self.op_revisions:
            key["op_revisions"] = self.op_revisions
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def result_path(folder: Path, job: Job) -> Path:
    return Path(folder) / f"{job.id}.json"


# What a result file holds (a schema as nas.predict.check takes it): what `train` returns.
RESULT_SCHEMA = {
    "arch": {"depth": int, "layers": [{"attention": str, "heads": int, "ffn_dim": int}]},
    "seed": int,
    "budget": {str: float},
    "op_revisions?": {str: int},
    "metric": METRICS,
    "val": float,
    "val_loss": float,
    "train_seconds": float,
    "host?": str,
    "pid?": int,
}


def read_result(folder: Path, job: Job) -> dict | None:
    """A finished job's result, or None. The folder may be shared by others, so a result is
    checked before it is believed: only the keys `train` writes, finite numbers, a metric in
    its range, and this job's arch, seed and budget; anything else is one ConfigError line
    naming the file (remove it and the job trains again)."""
    path = result_path(folder, job)
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ConfigError(f"standalone_dir {folder}: not a folder")
    if not path.exists():
        return None
    result = read_json(path, "standalone result", RESULT_SCHEMA)
    ranges = {"val": (0.0, 1.0 if result["metric"] == "acc" else math.inf), "val_loss": (0.0, math.inf)}
    for key, (low, high) in ranges.items():
        if not low <= result[key] <= high:
            raise ConfigError(
                f"standalone result {path}: {key} {result[key]!r} is outside {low:g}..{high:g} "
                f"(the range of {result['metric'] if key == 'val' else 'a loss'}); remove the file to train the job again"
            )
    expected = {
        "arch": job.model["arch"],
        "seed": job.seed,
        "budget": dataclasses.asdict(job.budget),
        "op_revisions": job.op_revisions,
    }
    found = {**result, "op_revisions": result.get("op_revisions", {})}  # absent before revisions existed
    other = next((key for key in expected if found[key] != expected[key]), None)
    if other is not None:
        raise ConfigError(
            f"standalone result {path}: its {other} is not this job's; remove the file to train the job again"
        )
    return result


def write_result(folder: Path, job: Job, result: dict) -> None:
    """Whole or absent: written beside, then renamed into place."""
    atomic_write(result_path(folder, job), json.dumps(result, indent=2) + "\n")


def claim(folder: Path, job: Job) -> bool:
    """Take `job` for this process: True if it was free. A claim left by a dead process of this
    host is taken over, and one of another host whose heartbeat stopped (`STALE_CLAIM_SECONDS`)."""
    path = Path(folder) / f"{job.id}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


def release(folder: Path, job: Job) -> None:
    (Path(folder) / f"{job.id}.claim").unlink(missing_ok=True)


def _stale(path: Path) -> bool:
    try:
        host, pid = path.read_text().split()
        touched = path.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return False  # being written by its owner, or gone: not ours to judge
    if host != socket.gethostname():
        return time.time() - touched > STALE_CLAIM_SECONDS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def touch_claims(folder: Path) -> None:
    """The heartbeat: refresh the mtime of every claim in `folder` this process holds."""
    mine = f"{socket.gethostname()} {os.getpid()}"
    for path in Path(folder).glob("*.claim"):
        try:
            if path.read_text().strip() == mine:
                os.utime(path)
        except OSError:
            pass  # released meanwhile


class _Heartbeat:
    """A daemon thread calling `touch_claims` every HEARTBEAT_SECONDS while the jobs train (in
    this process or in its workers: the claims are this process's either way)."""

    def __init__(self, folder: Path):
        self.folder, self.stop = folder, threading.Event()
        self.thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            touch_claims(self.folder)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int | None, jobs: int) -> int:
    """`workers`, checked; None: one worker per core, at most one per job. Tiny models train
    faster as one-thread processes side by side than as one process with many threads, and a
    busy machine does not stall them at every multi-threaded op's barrier."""
    if workers is None:
        return max(1, min(cores(), jobs))
    threads_per_worker(workers)
    return workers


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that workers x threads <= this machine's cores."""
    n = cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= n:
        raise ConfigError(
            f"workers={workers!r}: must be a whole number from 1 to the {n} cores of this machine, "
            "or null (one per core)"
        )
    return n // workers


def _start_worker(threads: int, filters: list) -> None:
    torch.set_num_threads(threads)
    reuse_freed_memory()  # a spawned child starts on glibc's defaults again; the CLIs' setting
    warnings.filters[:] = filters  # the parent's silenced notices stay silent in a spawned child
    quiet_lightning()


def quiet_lightning() -> None:
    """One job's Trainer set-up lines ("GPU available: ...") are noise when 16 jobs print them."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_jobs(
    jobs: Sequence[Job], folder: Path, train_fn: Callable[..., dict], workers: int = 1, poll_seconds: float = 10.0
) -> list[Job]:
    """Run every job without a result in `folder`, `workers` at a time; return once every job
    has one (also those other processes or machines claimed). Returns the jobs trained here.

    Args:
        jobs: the work list; the same list may be run by several processes at once.
        folder: where results and claims live (a shared file system for many machines).
        train_fn: the training of one job, `train_fn(job, checkpoints=folder)` -> its result
            (`nas.training.standalone.train`); a module-level function when workers > 1.
        workers: 1 trains in this process; K > 1 in K spawned processes, torch threads split.
        poll_seconds: how often to look again for jobs other processes are training.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    threads = threads_per_worker(workers)
    trained: list[Job] = []
    waiting_logged = False
    finished = sum(read_result(folder, j) is not None for j in jobs)
    if finished < len(jobs):
        log.info(
            "%d of %d standalone jobs have a result in %s; training the rest (%d workers here, %d torch threads each)",
            finished,
            len(jobs),
            folder,
            workers,
            threads,
        )
    else:
        log.info("all %d standalone jobs have a result in %s", len(jobs), folder)
    while True:
        pending = [j for j in jobs if read_result(folder, j) is None]
        if not pending:
            return trained
        with _Heartbeat(folder):
            got = _train_free(pending, folder, workers, threads, train_fn)
        trained += got
        if got:
            continue
        if not waiting_logged:  # every job left is claimed by a live process elsewhere
            log.info("waiting for %d standalone jobs other processes claimed (%s/*.claim)", len(pending), folder)
            waiting_logged = True
        time.sleep(poll_seconds)


def _next_free(queue: list[Job], folder: Path) -> Job | None:
    """Claim the next job of `queue` nobody finished or holds; claimed one at a time, just
    before it trains, so that processes sharing the list split it evenly."""
    while queue:
        job = queue.pop(0)
        if read_result(folder, job) is None and claim(folder, job):
            return job
    return None


def _train_and_write(train_fn, folder: Path, job: Job) -> dict:
    """In the worker: the result is on disk as soon as it exists, even if the parent is gone;
    then the job's checkpoint goes."""
    checkpoints = folder / "in_progress"
    result = train_fn(job, checkpoints=checkpoints)
    write_result(folder, job, result)
    for leftover in checkpoints.glob(f"{job.id}.ckpt*"):
        leftover.unlink(missing_ok=True)
    return result


def _finish(folder: Path, job: Job, result: dict, done: list[Job]) -> None:
    release(folder, job)
    done.append(job)
    log.info("standalone job %s done: val %.4f (%.0f s)", job.id, result["val"], result["train_seconds"])


def _train_free(pending: list[Job], folder: Path, workers: int, threads: int, train_fn) -> list[Job]:
    queue, done = list(pending), []
    if workers == 1:
        quiet_lightning()
        while (job := _next_free(queue, folder)) is not None:
            try:
                result = _train_and_write(train_fn, folder, job)
            except BaseException:
                release(folder, job)  # free the job for the next run
                raise
            _finish(folder, job, result, done)
        return done
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools or CUDA state
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(threads, list(warnings.filters))
    )
    running: dict[concurrent.futures.Future, Job] = {}
    try:
        for _ in range(workers):
            if (job := _next_free(queue, folder)) is not None:
                running[pool.submit(_train_and_write, train_fn, folder, job)] = job
        while running:
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                _finish(folder, job, future.result(), done)
                if (job := _next_free(queue, folder)) is not None:
                    running[pool.submit(_train_and_write, train_fn, folder, job)] = job
        return done
    finally:  # on an error the jobs in flight are dropped and freed for the next run
        pool.shutdown(wait=True, cancel_futures=True)
        for job in running.values():
            release(folder, job)
