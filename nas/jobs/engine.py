"""`nas-rank`'s standalone trainings run as jobs on submitit (https://github.com/facebookincubator/submitit):
processes on this machine (`local`), sbatch jobs on a SLURM cluster (`slurm`), or one after another
in this process (`debug`, submitit's DebugExecutor). What a job trains is `train_fn`'s business
(`nas.training.standalone.train`); its result file is `job.py`'s.

A job whose result exists is not submitted, and a submitted one that finds its result written
meanwhile trains nothing. A job keeps its last epoch in `in_progress/<id>.ckpt`, so one killed,
or requeued by SLURM at its time limit or on preemption, resumes there. Every job runs to its
end whatever the others do; one summary follows (trained, reused, failed with its one-line
error), and failures then stop the command in one line.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import torch

from nas.cpu_allocator import reuse_freed_memory
from nas.errors import ConfigError, check_number, check_whole, excerpt
from nas.jobs.job import Job, read_result, write_result

log = logging.getLogger("nas")

EXECUTORS = ("local", "slurm", "debug")
LOCAL_TIME_LIMIT_MIN = 60 * 24 * 365  # submitit stops a local job at its time limit (2 min unless set): a year is none
POLL_SECONDS = 2.0  # how often finished jobs are looked for
_SBATCH_NAME = re.compile(r"[a-z][a-z0-9-]*")  # an sbatch option's long name, e.g. account, mail-type


@dataclass(frozen=True)
class SlurmConfig:
    """How each standalone job is submitted to SLURM: one job array, one task per job."""

    partition: str | None = None  # sbatch --partition; null: the cluster's default
    gpus_per_job: int = 0  # --gpus-per-node; 1 with trainer=gpu (each job trains on one device)
    cpus_per_job: int = 4  # --cpus-per-task; also the job's torch threads
    mem_gb: float | None = None  # --mem; null: the partition's default
    time_minutes: int = 120  # --time; a job still training then is requeued and resumes from its last epoch
    sbatch: dict[str, Any] = field(default_factory=dict)  # more sbatch options by name, e.g. {account: lab, qos: high}

    def __post_init__(self):
        check_whole(self.gpus_per_job, "gpus_per_job", 0)
        check_whole(self.cpus_per_job, "cpus_per_job", 1)
        check_whole(self.time_minutes, "time_minutes", 1)
        if self.mem_gb is not None:
            check_number(self.mem_gb, "mem_gb", "positive")
        if self.partition is not None:
            _sbatch_value("partition", self.partition)
        for name, value in self.sbatch.items():
            if not isinstance(name, str) or not _SBATCH_NAME.fullmatch(name):
                raise ConfigError(f"sbatch: {excerpt(name)} is not an sbatch option's name (e.g. account, mail-type)")
            _sbatch_value(f"sbatch.{name}", value)


def _sbatch_value(name: str, value: object) -> None:
    """A value for one `#SBATCH` line: a newline would start a line of its own in the script."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or "\n" in str(value):
        raise ConfigError(f"{name}={excerpt(value)}: must be one line of text or a number")


@dataclass(frozen=True)
class JobsConfig:
    """Where the standalone jobs run (`jobs.*`); how many at once is `nas-rank`'s `workers`."""

    # local: processes on this machine; slurm: sbatch jobs, from a cluster's login node, on a file
    # system the nodes share; debug: one after another in this process (breakpoints work)
    executor: str = "local"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # with executor=slurm

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor={excerpt(self.executor)}: allowed: {', '.join(EXECUTORS)}")


class JobsFailed(ConfigError):
    """Jobs that ended without a result: one line, as bad input is, after the summary."""


@dataclass(frozen=True)
class JobsSummary:
    """What a `run_jobs` call did with each job."""

    trained: list[Job]  # trained by this call
    reused: list[Job]  # had a result already
    failed: list[tuple[Job, str]]  # ended without one, with the one-line error

    def text(self) -> str:
        lines = [f"standalone jobs: {len(self.trained)} trained, {len(self.reused)} reused, {len(self.failed)} failed"]
        return "\n".join([*lines, *(f"  {job.id} (seed {job.seed}) failed: {error}" for job, error in self.failed)])


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_engine(config: JobsConfig, workers: object) -> None:
    """One ConfigError line unless the jobs can run as asked, checked before any work: SLURM
    reachable from here, this process's GPUs named so that local jobs can be given them, and
    `workers` (jobs at once) as the executor takes it; on this machine at most one per core,
    since the jobs split the cores between them."""
    if config.executor == "slurm" and shutil.which("srun") is None:  # what submitit looks for
        raise ConfigError(
            "jobs.executor=slurm: no SLURM here (srun not found); run nas-rank on the cluster's login node, "
            "or use jobs.executor=local"
        )
    if config.executor == "local":
        local_gpus()
    if workers is None:
        return
    if config.executor != "local":
        check_whole(workers, "workers", 1)
    elif isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= cores():
        raise ConfigError(
            f"workers={excerpt(workers)}: must be a whole number from 1 to the {cores()} cores of this machine, "
            "or null (one per core)"
        )


def make_executor(config: JobsConfig, folder: Path, workers: int | None = None) -> submitit.Executor:
    """The submitit executor of `config`, keeping its pickles and logs in `folder`; `workers`:
    the array tasks SLURM may run at once (null: submitit's cap of 256)."""
    if config.executor == "local":
        executor = submitit.LocalExecutor(folder)
        gpus = local_gpus()  # submitit hides every GPU from a local job unless given some
        executor.update_parameters(timeout_min=LOCAL_TIME_LIMIT_MIN, gpus_per_node=len(gpus), visible_gpus=gpus)
        return executor
    if config.executor == "debug":
        return submitit.AutoExecutor(folder, cluster="debug")
    executor = submitit.AutoExecutor(folder, cluster="slurm")
    s = config.slurm
    executor.update_parameters(  # None: left to the cluster's defaults
        name="nas-rank",
        timeout_min=s.time_minutes,
        gpus_per_node=s.gpus_per_job,
        cpus_per_task=s.cpus_per_job,
        mem_gb=s.mem_gb,
        slurm_partition=s.partition,
        slurm_array_parallelism=workers,
        slurm_additional_parameters=dict(s.sbatch) or None,
    )
    return executor


def local_gpus() -> tuple[int, ...]:
    """The GPUs this process sees, by index: what each local job sees too."""
    seen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if seen is None:
        return tuple(range(torch.cuda.device_count()))  # counted without starting CUDA
    listed = [part.strip() for part in seen.split(",") if part.strip()]
    if not all(part.isdigit() for part in listed):
        raise ConfigError(
            f"CUDA_VISIBLE_DEVICES={excerpt(seen)}: local jobs are given GPUs by index; list indices "
            "(nvidia-smi -L), or leave it unset"
        )
    return tuple(int(part) for part in listed)


class _Training(submitit.helpers.Checkpointable):
    """What one submitted job runs: a training whose result is written into `folder`. Returns
    None, or the error that stopped it as one line (the traceback goes to the job's log), so a
    failed training is counted in the summary while the jobs beside it go on. Checkpointable:
    on SLURM's time-limit or preemption signal submitit requeues this same call, and the
    training resumes from its last epoch."""

    def __init__(self, train_fn: Callable[..., dict], folder: Path, threads: int | None, filters: list):
        self.train_fn, self.folder, self.threads, self.filters = train_fn, folder, threads, filters

    def __call__(self, job: Job) -> str | None:
        if self.threads is not None:  # a process of its own: set up as the command's was
            torch.set_num_threads(self.threads)
            reuse_freed_memory()
            warnings.filters[:] = self.filters  # the command's silenced notices stay silent
        quiet_lightning()
        checkpoints = self.folder / "in_progress"
        try:
            if read_result(self.folder, job) is None:  # else written meanwhile: a requeue, a second submission
                write_result(self.folder, job, self.train_fn(job, checkpoints=checkpoints))
        except Exception as err:  # any error of one training is that job's, reported in the summary
            log.error("standalone job %s failed", job.id, exc_info=True)  # the traceback, into the job's log
            return f"{type(err).__name__}: {' '.join(str(err).split())}"[:500]
        for leftover in checkpoints.glob(f"{job.id}.ckpt*"):
            leftover.unlink(missing_ok=True)
        return None


def quiet_lightning() -> None:
    """One job's Trainer set-up lines ("GPU available: ...") are noise when 16 jobs print them."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_jobs(
    jobs: Sequence[Job],
    folder: Path,
    train_fn: Callable[..., dict],
    config: JobsConfig = JobsConfig(),
    workers: int | None = None,
) -> JobsSummary:
    """Train every job without a result in `folder` on `config`'s executor and wait for all.

    Args:
        jobs: the work list (a job listed twice trains once).
        folder: where results live, with `submitit/<time>-*/` holding the jobs' pickles and logs
            (removed when every job succeeded); on a file system the nodes share for SLURM.
        train_fn: the training of one job, `train_fn(job, checkpoints=folder)` -> its result
            (`nas.training.standalone.train`); a module-level function, as it is pickled.
        config: the executor and its options.
        workers: jobs at once; local: processes, each with cores / workers torch threads
            (null: one per core); slurm: array tasks at once (null: submitit's cap, 256).

    Returns:
        The summary, also logged. Raises JobsFailed (one line) after it if any job failed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_engine(config, workers)
    unique = list({job.id: job for job in jobs}.values())
    finished = {job.id for job in unique if read_result(folder, job) is not None}
    reused = [job for job in unique if job.id in finished]
    pending = [job for job in unique if job.id not in finished]
    if not pending:
        summary = JobsSummary([], reused, [])
        log.info("%s (results in %s)", summary.text(), folder)
        return summary
    at_once, threads = _at_once(config, workers, len(pending))
    log.info(
        "%d of %d standalone jobs have a result in %s; training the rest on %s (%s at once)",
        len(reused),
        len(unique),
        folder,
        config.executor,
        at_once if config.executor != "slurm" else workers or "all",
    )
    (folder / "submitit").mkdir(exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=folder / "submitit"))
    executor = make_executor(config, logs, workers)
    call = _Training(train_fn, folder, threads, list(warnings.filters))
    errors = _submit_and_wait(executor, call, pending, at_once, folder)
    failed = [(job, errors[job.id]) for job in pending if errors[job.id] is not None]
    summary = JobsSummary([job for job in pending if errors[job.id] is None], reused, failed)
    log.info("%s", summary.text())
    if not failed:
        shutil.rmtree(logs, ignore_errors=True)
        return summary
    job, error = failed[0]
    raise JobsFailed(
        f"{len(failed)} of {len(unique)} standalone jobs failed, the first {job.id} (seed {job.seed}): {error}; "
        "a rerun trains only the jobs without a result"
    )


def _at_once(config: JobsConfig, workers: int | None, pending: int) -> tuple[int, int | None]:
    """(jobs submitted at once, torch threads per job; None: leave this process's)."""
    if config.executor == "debug":
        return 1, None
    if config.executor == "slurm":  # one array; SLURM runs `workers` of it at once
        return pending, config.slurm.cpus_per_job
    at_once = workers or max(1, min(cores(), pending))
    return at_once, max(1, cores() // at_once)  # tiny models train faster as 1-thread processes side by side


def _submit_and_wait(executor, call: _Training, jobs: list[Job], at_once: int, folder: Path) -> dict[str, str | None]:
    """Each job's one-line error (None: its result is written), keeping `at_once` submitted; the
    jobs still running are cancelled if this process stops (Ctrl-C, an error)."""
    waiting, running, errors = list(jobs), {}, {}
    try:
        while waiting or running:
            if waiting and len(running) < at_once:
                batch, waiting = waiting[: at_once - len(running)], waiting[at_once - len(running) :]
                running.update((job.id, (job, handle)) for job, handle in zip(batch, executor.map_array(call, batch)))
            finished = [key for key, (_, handle) in running.items() if handle.done()]
            for key in finished:
                job, handle = running.pop(key)
                error, result = _outcome(handle), read_result(folder, job)
                errors[key] = None if result is not None else error or "ended without writing its result"
                if result is not None:
                    log.info("standalone job %s done: val %.4f (%.0f s)", key, result["val"], result["train_seconds"])
            if not finished:
                time.sleep(POLL_SECONDS)
    finally:
        for _, handle in running.values():
            handle.cancel(check=False)
    return errors


def _outcome(handle: submitit.Job) -> str | None:
    """The job's one-line error, with where its log is; None when it trained."""
    try:
        error = handle.result()
    except Exception as err:  # it ended without returning: killed, out of memory, timed out too often
        error = f"ended without a result ({type(err).__name__}, state {handle.state})"
    return None if error is None else f"{error} (log: {handle.paths.stderr})"
