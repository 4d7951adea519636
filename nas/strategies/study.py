"""Many search workers on one Optuna study: the storage a config names, asks serialized across
workers, abandoned trials run again with Optuna's heartbeat and retry (https://optuna.readthedocs.io/
en/latest/reference/generated/optuna.storages.RetryHeartbeatStaleTrialCallback.html).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import (
    BaseHeartbeat,
    get_heartbeat_thread,
    is_heartbeat_enabled,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from nas.errors import ConfigError, excerpt

log = logging.getLogger(__name__)

WORKER = "worker"  # trial user attr: the host:pid that runs it
MAX_RETRY = 3  # an arch whose trial is abandoned this often (it kills its worker?) is given up
EXAMPLES = "sqlite:///<file>, postgresql://<user>:<password>@<host>/<database> or journal:<file>"


class SharedStudy:
    """An Optuna study that several worker processes fill with exactly `total` complete trials.

    `storage` is a config value: None (in memory), "sqlite:///<file>", "postgresql://..." (the
    psycopg driver of the `postgres` extra) or "journal:<file>"; it is checked when this object
    is made, before any training. Workers ask one at a time, under a lock (a file beside a file
    storage, a PostgreSQL advisory lock on a server), and only while the complete and running
    trials number fewer than `total`: no worker overshoots, and a worker with nothing left to ask
    waits for the others' trials.

    Abandoned trials: Optuna's own heartbeat (`RDBStorage(heartbeat_interval, grace_period,
    heartbeat_stale_trial_callback)`, the thread `Study.optimize` runs a trial under, and
    `fail_stale_trials` before each ask) fails a trial whose worker fell silent, and Optuna's
    `RetryHeartbeatStaleTrialCallback` enqueues its params again. Optuna 5's JournalStorage has no
    heartbeat, so a small subclass gives it Optuna's heartbeat interface (beats in trial system
    attrs, this host's clock). Kept by hand, as Optuna has no equivalent: the exact count above,
    and a trial whose worker is a dead process of this host is failed at once (a killed single
    worker resumes without waiting out the grace period).

    Args:
        storage: where the study lives (see above).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat after which a trial counts as abandoned
            (None: Optuna's default, two heartbeat intervals).
    """

    def __init__(self, storage: str | None, heartbeat_interval: int = 30, grace_period: int | None = None):
        for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"strategy.{name} must be a positive whole number of seconds; got {excerpt(value)}")
        self.storage, self.heartbeat_interval, self.grace_period = storage, heartbeat_interval, grace_period
        self.url, self.file = parse_storage(storage)
        with warnings.catch_warnings():  # Optuna's heartbeat and retry are "experimental" since 2.8
            warnings.simplefilter("ignore", ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        self._storage: optuna.storages.BaseStorage | None = None
        self._lock_engine: sqlalchemy.engine.Engine | None = None

    def __str__(self) -> str:
        """The storage as messages show it: without a password."""
        return self.url.render_as_string(hide_password=True) if self.url is not None else str(self.storage)

    def check(self) -> None:
        """Reach the storage now (before hours of training), or stop with one line."""
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        elif self.url is not None:
            try:
                with self._engine().connect() as connection:
                    connection.execute(sqlalchemy.text("SELECT 1"))
            except sqlalchemy.exc.SQLAlchemyError as err:
                reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
                raise ConfigError(f"storage {self}: cannot connect ({reason})") from None

    # -- the study -------------------------------------------------------------------------
    def load(
        self,
        name: str,
        sampler: optuna.samplers.BaseSampler,
        directions: list[str],
        setup: Callable[[optuna.Study], None],
    ) -> optuna.Study:
        """Create the study or load it (`load_if_exists`); `setup` runs under the lock, so one
        worker alone sees a new study and marks it."""
        with self.lock(name):  # creating the tables and the study races between workers otherwise
            study = optuna.create_study(
                storage=self._open(), study_name=name, sampler=sampler, directions=directions, load_if_exists=True
            )
            setup(study)
        return study

    def ask(
        self,
        study: optuna.Study,
        total: int,
        suggest: Callable[[Trial], None],
        sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None,
    ) -> Trial | None:
        """The next trial for this worker, with `suggest` called on it; None once the study holds
        `total` complete trials. Waits while the missing trials are other workers' running ones.
        With `sampler`, the study asks with `sampler(number of complete trials)`."""
        while True:
            with self.lock(study.study_name):
                self._recover(study)
                states = [t.state for t in study.get_trials(deepcopy=False)]
                done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
                if done >= total:
                    return None
                if done + running < total:
                    if sampler is not None:
                        study.sampler = sampler(done)
                    with warnings.catch_warnings():  # we do what Study.optimize does around a trial
                        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
                        trial = study.ask()
                    trial.set_user_attr(WORKER, worker_id())
                    if is_heartbeat_enabled(self._storage):  # no running trial without a beat
                        self._storage.record_heartbeat(trial._trial_id)
                    suggest(trial)
                    return trial
            time.sleep(1.0)  # for the running trials of others (seconds each)

    @contextlib.contextmanager
    def running(self, study: optuna.Study, trial: Trial) -> Iterator[None]:
        """Run the body (the trial's evaluation and its `tell`) under the trial's heartbeat.

        If the body raises (Ctrl-C, an error), the trial fails and its params are enqueued again.
        If the trial was taken for abandoned meanwhile (its re-run then counts), the body's writes
        to it fail; this is logged, not raised.
        """
        with get_heartbeat_thread(trial._trial_id, self._storage):  # what Study.optimize uses
            try:
                yield
            except BaseException as err:
                if not self._storage.get_trial(trial._trial_id).state.is_finished():
                    self._again(study, study.tell(trial, state=TrialState.FAIL), "was interrupted")
                elif isinstance(err, (ValueError, UpdateFinishedTrialError)):  # Optuna: "finished"
                    log.warning(
                        "trial %d was taken for abandoned while it ran; its re-run counts instead", trial.number
                    )
                    return
                raise

    # -- plumbing --------------------------------------------------------------------------
    def lock(self, name: str):
        """The lock that serializes asks on study `name` across workers."""
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            return FileLock(self.file.with_name(f"{self.file.name}.workers.lock"))
        if self.url is not None:
            return self._advisory_lock(zlib.crc32(f"longnas:{name}".encode()))
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _advisory_lock(self, key: int) -> Iterator[None]:
        # A session lock: the server releases it if this worker dies holding it.
        with self._engine().connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def _engine(self) -> sqlalchemy.engine.Engine:
        if self._lock_engine is None:
            self._lock_engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        return self._lock_engine

    def _open(self) -> optuna.storages.BaseStorage:
        if self._storage is not None:
            return self._storage
        heartbeat = {
            "heartbeat_interval": self.heartbeat_interval,
            "grace_period": self.grace_period,
            "heartbeat_stale_trial_callback": self._silent,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            if self.url is None and self.file is None:
                self._storage = optuna.storages.InMemoryStorage()
            elif self.url is None:
                self._storage = HeartbeatJournalStorage(self.file, **heartbeat)
            else:
                # SQLite: wait for another worker's write instead of failing with "database is locked".
                sqlite = self.url.get_backend_name() == "sqlite"
                self._storage = optuna.storages.RDBStorage(
                    self.url.render_as_string(hide_password=False),
                    **heartbeat,
                    engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else {},
                )
        return self._storage

    def _recover(self, study: optuna.Study) -> None:
        """Fail (and enqueue again) the trials whose workers are gone."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # silent ones, through the retry callback
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _dead_here(trial):
                # Its worker may have told it meanwhile, if we misjudged it: then leave it be.
                failed = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                if failed.state == TrialState.FAIL:
                    self._again(study, failed, "lost its process")

    def _silent(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._again(study, trial, "fell silent (no heartbeat)")

    def _again(self, study: optuna.Study, trial: FrozenTrial, why: str) -> None:
        """Enqueue a failed trial's params again, through Optuna's retry callback."""
        log.warning(
            "trial %d of worker %s %s; its arch runs again (at most %d times)",
            trial.number,
            trial.user_attrs.get(WORKER, "?"),
            why,
            MAX_RETRY,
        )
        self.retry(study, trial)


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """A journal file with the heartbeat interface Optuna 5 implements only for RDBStorage, so that
    `fail_stale_trials` and the heartbeat thread of `Study.optimize` serve it too. A beat is a trial
    system attr holding this host's time: keep the clocks of hosts sharing a journal in sync."""

    BEAT = "heartbeat"

    def __init__(
        self,
        path: Path,
        heartbeat_interval: int,
        grace_period: int | None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None],
    ):
        super().__init__(JournalFileBackend(str(path)))
        self.heartbeat_interval, self.callback = heartbeat_interval, heartbeat_stale_trial_callback
        self.grace_period = grace_period if grace_period is not None else 2 * heartbeat_interval

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, self.BEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if now - t.system_attrs.get(self.BEAT, now) > self.grace_period]

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        return self.callback


def parse_storage(storage: str | None) -> tuple[URL | None, Path | None]:
    """A storage config value as (database URL, file): the URL of a database, the file of an
    SQLite database or a journal. Raises ConfigError with the allowed forms."""
    if storage is None:
        return None, None
    if storage.startswith("journal:"):
        path = storage.removeprefix("journal:")
        if not path:
            raise ConfigError(f"storage {storage!r} names no file; allowed: {EXAMPLES}")
        return None, Path(path)
    try:
        url = make_url(storage)
    except ArgumentError:
        raise ConfigError(
            f"storage {storage!r} is neither a database URL nor a journal file; allowed: {EXAMPLES}"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:" or url.host:
            raise ConfigError(
                f"storage {storage!r} names no SQLite file (three slashes: "
                f"sqlite:///runs/optuna.db); allowed: {EXAMPLES}"
            )
        return url, Path(url.database)
    if backend != "postgresql":
        raise ConfigError(f"storage {storage!r}: unsupported database '{backend}'; allowed: {EXAMPLES}")
    if url.drivername == "postgresql":  # SQLAlchemy's default is psycopg2; the extra installs psycopg 3
        url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect().import_dbapi()
    except ImportError:
        raise ConfigError(
            f"storage {url.render_as_string(hide_password=True)} needs the "
            f"'{url.get_driver_name()}' driver: pip install 'longnas[postgres]'"
        ) from None
    return url, None


def worker_id() -> str:
    """Who runs a trial: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's worker is a dead process of this host, or this process (which
    runs one trial at a time and asks none while it runs one, so the trial is an interrupted
    earlier call's)."""
    host, _, pid = str(trial.user_attrs.get(WORKER, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process
        return False
    return False
