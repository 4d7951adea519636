"""SPOS supernet training, then an evolutionary search over it: NSGA-II (Deb et al. 2002,
https://doi.org/10.1109/4235.996017) with Optuna, trading the validation metric with inherited
weights against a cost from `nas.cost`, under hard cost constraints (as in SPOS and HAT).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from nas import cost as costs
from nas.errors import ConfigError
from nas.space import LAYER_FIELDS, Arch, LayerArch, SearchSpace
from nas.metrics import HIGHER_IS_BETTER, evaluate, score
from nas.results import Candidate, SearchResult, pareto_front
from nas.strategies.base import SearchContext
from nas.strategies.registry import STRATEGIES
from nas.strategies.single_path import SinglePathStrategy

log = logging.getLogger(__name__)

UNITS = {"params": "params", "flops": "FLOPs", "memory": "MiB", "latency": "ms"}
WORKER, HEARTBEAT = "worker", "heartbeat"  # trial user attrs: who runs it, when it last said so


@STRATEGIES.register("evolution")
class EvolutionStrategy(SinglePathStrategy):
    """SPOS training (inherited), then NSGA-II over archs evaluated with inherited weights.

    Two objectives: the validation metric (its own direction) and `cost` (minimized). The study
    lives in an Optuna storage, so a search resumes (the same call runs only the missing trials)
    and several workers can share it; all of them return the same result, made from every
    complete trial of the study. A study belongs to one trained supernet (its trials' values
    came from those weights) and one search: continuing a study with another space, metric,
    cost, seq_len, constraints or population is refused; after retraining, use a new study_name.
    Constraints reach NSGA-II through `Trial.set_constraint` (Optuna 5's replacement for the
    deprecated `constraints_func`): a trial is feasible when every cost is within its limit.

    Workers: one per process, each with its own `seed` (with the same seed, workers would
    propose the same first generation). Each holds a file lock beside the storage while it
    counts the trials that are complete or running and asks for a new one only if that count is
    below `population * generations`: workers never overshoot, and the study ends with exactly
    that many complete trials. A worker with nothing left to ask waits until the others' trials
    are complete.

    Abandoned trials (a killed worker leaves its trial RUNNING): every running trial carries its
    worker (host:pid) and a heartbeat, a time stamp its worker renews every
    `heartbeat_interval` seconds. Before asking, a worker fails the running trials whose worker
    is a dead process of its own host (or itself: it runs one trial at a time), or whose
    heartbeat is older than `grace_period`, and enqueues their params so that the same arch runs
    again. We keep the heartbeat in trial attrs rather than using Optuna's (`RDBStorage`
    heartbeat with `fail_stale_trials`) because Optuna's works only for RDB storages and with
    `Study.optimize`, while this works with ask-and-tell on SQLite, PostgreSQL and journal files
    alike, and resumes a single killed worker at once instead of after the grace period. Other
    hosts' heartbeats are compared with this host's clock: keep clocks in sync within the grace.

    Args:
        population: NSGA-II population size; the first generation is random.
        generations: the search runs `population * generations` trials in all; a resumed study
            may be given more generations to search further.
        mutation_prob: per-decision mutation probability (None: Optuna's 1 / number of decisions).
        crossover_prob: probability that a child comes from crossover rather than one parent.
        cost: the second objective: "params", "flops", "memory" (activation MiB) or "latency" (ms).
        constraints: hard limits, {cost kind: maximum}, e.g. {"params": 1e6, "latency": 5.0}. The
            cheapest arch of each kind is enqueued first, so some trial is feasible.
        seq_len: the sequence length at which costs are taken (None: the supernet's maximum).
        storage: an Optuna RDB URL (e.g. "sqlite:///<run dir>/optuna.db") or the path of a
            journal file; None keeps the study in memory (nothing to resume or share).
        study_name: the study in the storage; a storage may hold several.
        lock: the lock file that serializes asks across workers (None: beside a file storage;
            a server storage such as PostgreSQL needs one on a file system all workers see).
        heartbeat_interval: seconds between a worker's heartbeats.
        grace_period: seconds without a heartbeat after which a trial counts as abandoned
            (None: four heartbeat intervals).
        kwargs: SPOS options (`sandwich`, `distill`).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 16, generations: int = 4,
                 mutation_prob: float | None = None, crossover_prob: float = 0.9, cost: str = "params",
                 constraints: dict[str, float] | None = None, seq_len: int | None = None,
                 storage: str | None = None, study_name: str = "evolution", lock: str | None = None,
                 heartbeat_interval: float = 30.0, grace_period: float | None = None, **kwargs):
        super().__init__(space, seed, **kwargs)
        constraints = dict(constraints or {})
        for kind in [cost, *constraints]:
            if kind not in costs.KINDS:
                raise ConfigError(f"unknown cost '{kind}'; allowed: {', '.join(costs.KINDS)}")
        for kind, limit in constraints.items():
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
                raise ConfigError(f"constraints.{kind} must be a positive number; got {limit!r}")
        if population < 2 or generations < 1:
            raise ConfigError(f"evolution needs population >= 2 and generations >= 1; "
                              f"got {population} and {generations}")
        for name, p in (("mutation_prob", mutation_prob), ("crossover_prob", crossover_prob)):
            if p is not None and not 0 <= p <= 1:
                raise ConfigError(f"{name} must be within [0, 1]; got {p!r}")
        if heartbeat_interval <= 0:
            raise ConfigError(f"heartbeat_interval must be positive; got {heartbeat_interval!r}")
        self.population, self.generations = population, generations
        self.mutation_prob, self.crossover_prob = mutation_prob, crossover_prob
        self.cost, self.constraints = cost, {k: float(v) for k, v in constraints.items()}
        self.seq_len, self.storage, self.study_name, self.lock = seq_len, storage, study_name, lock
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period if grace_period is not None else 4 * heartbeat_interval

    @property
    def total_trials(self) -> int:
        return self.population * self.generations

    # -- costs -----------------------------------------------------------------------------
    def attach(self, supernet) -> None:
        super().attach(supernet)
        self.shape = supernet.shape
        if self.seq_len is not None and self.seq_len > supernet.shape.max_len:
            raise ConfigError(f"seq_len {self.seq_len} is longer than the model's maximum {supernet.shape.max_len}")
        self.cost_len = self.seq_len or supernet.shape.max_len
        # Fail before hours of supernet training, not after.
        for kind, limit in self.constraints.items():
            choices, cheapest = self.cheapest(kind)
            if cheapest > limit:
                layer = LayerArch(*(choices[f"layer0.{f}"] for f in LAYER_FIELDS))
                raise ConfigError(
                    f"no arch in space '{self.space.name}' meets constraints.{kind} <= {limit:g}: the "
                    f"cheapest, {choices['depth']} x ({layer.attention}, heads={layer.heads}, "
                    f"ffn_dim={layer.ffn_dim}), costs {cheapest:g} {UNITS[kind]} at seq_len {self.cost_len}")

    def arch_cost(self, arch: Arch, kind: str) -> float:
        return float(costs.arch_cost(arch, self.space, self.shape, self.cost_len, kind))

    def cheapest(self, kind: str) -> tuple[dict, float]:
        """The choices of every decision for the cheapest arch of `kind`, and its cost.

        Costs add over layers and none is negative, so the cheapest arch is the shallowest one
        made of the cheapest layer.
        """
        space = self.space
        layers = (LayerArch(a, h, f) for a in space.attention for h in space.heads for f in space.ffn_dims)
        layer = min(layers, key=lambda x: costs.layer_cost(x, space, self.shape, self.cost_len, kind))
        depth = min(space.depths)
        choices = {"depth": depth, **{f"layer{i}.{f}": getattr(layer, f)
                                      for i in range(space.max_depth) for f in LAYER_FIELDS}}
        return choices, self.arch_cost(Arch(depth, (layer,) * depth), kind)

    # -- the search ------------------------------------------------------------------------
    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """Run the trials the study still lacks, then choose from all its complete trials.

        Args:
            ctx: the search: its `supernet` (trained), `metric` and `log_metrics`.
            val_batches: the batches every arch is evaluated on.

        Returns:
            `best`, the feasible arch with the best metric (the cheaper one on ties); `ranked`,
            the distinct feasible archs, best first; `pareto`, the non-dominated ones (metric vs
            cost), cheapest first. Each candidate's metrics hold `val/<metric>` and `cost/<kind>`.
        """
        metric = ctx.metric
        lock = self._lock()
        sampler = optuna.samplers.NSGAIISampler(
            population_size=self.population, mutation_prob=self.mutation_prob,
            crossover_prob=self.crossover_prob, seed=self.rng.randrange(2**32))
        with lock:  # creating the tables and the study races between workers otherwise
            study = optuna.create_study(
                storage=self._open_storage(), study_name=self.study_name, sampler=sampler,
                directions=["maximize" if HIGHER_IS_BETTER[metric] else "minimize", "minimize"],
                load_if_exists=True)
            self._claim(study, metric)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        # Every worker and every resumed call evaluates the same supernet weights, so the value
        # a trial found for an arch stands for that arch.
        known = {self.space.arch_from_choices(t.params): t.values[0] for t in complete}
        logged = len(complete) // self.population
        while True:
            with lock:
                self._fail_abandoned(study)
                states = [t.state for t in study.get_trials(deepcopy=False)]
                done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
                if done >= self.total_trials:
                    break
                trial = self._ask(study) if done + running < self.total_trials else None
            if trial is None:  # the last trials are other workers': wait for them
                time.sleep(min(1.0, self.heartbeat_interval))
                continue
            self._run(study, trial, ctx.supernet, val_batches, metric, known)
            logged = self._report(study, ctx, metric, logged)
        return self._result(study, metric)

    def _storage_file(self) -> Path | None:
        """The file that holds the study, if any (a journal file, an SQLite database)."""
        if not _is_url(self.storage):
            return Path(self.storage)
        try:
            url = make_url(self.storage)
        except ArgumentError:
            raise ConfigError(f"storage {self.storage!r}: malformed database URL; expected e.g. "
                              "sqlite:///runs/optuna.db") from None
        return Path(url.database) if url.drivername.startswith("sqlite") and url.database else None

    def _lock(self):
        """The lock that serializes asks (and creating the study) across workers."""
        if self.storage is None:
            return contextlib.nullcontext()
        path = self._storage_file()
        if path is None and self.lock is None:
            raise ConfigError(f"storage {self.storage} is a server: give `lock`, the path of a lock file "
                              "on a file system that every worker sees")
        lock = Path(self.lock) if self.lock else path.with_name(f"{path.name}.workers.lock")
        for folder in {lock.parent, *([path.parent] if path else [])}:
            folder.mkdir(parents=True, exist_ok=True)
        return FileLock(lock)

    def _open_storage(self) -> optuna.storages.BaseStorage:
        if self.storage is None:
            return optuna.storages.InMemoryStorage()
        if not _is_url(self.storage):
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(self.storage))
        # SQLite: wait for another worker's write instead of failing with "database is locked".
        kwargs = {"connect_args": {"timeout": 60}} if self._storage_file() is not None else {}
        return optuna.storages.RDBStorage(self.storage, engine_kwargs=kwargs)

    def _claim(self, study: optuna.Study, metric: str) -> None:
        """Mark a new study with what it searches; refuse to continue a study of another search."""
        search = json.loads(json.dumps({
            "space": self.space.to_dict(), "metric": metric, "cost": self.cost, "seq_len": self.cost_len,
            "constraints": self.constraints, "population": self.population}))
        if "search" not in study.user_attrs:
            study.set_user_attr("search", search)
            for kind in self.constraints:
                study.enqueue_trial(self.cheapest(kind)[0])
            return
        differ = [key for key, value in search.items() if study.user_attrs["search"].get(key) != value]
        if differ:
            raise ConfigError(f"study '{self.study_name}' in {self.storage} belongs to another search "
                              f"(its {', '.join(differ)} differ); give another study_name or storage")

    def _ask(self, study: optuna.Study) -> Trial:
        trial = study.ask()
        for key, options in self.space.decisions().items():  # every layer: a fixed parameter space
            trial.suggest_categorical(key, options)
        trial.set_user_attr(WORKER, _worker())
        trial.set_user_attr(HEARTBEAT, time.time())
        return trial

    def _run(self, study: optuna.Study, trial: Trial, supernet, val_batches: list[dict], metric: str,
             known: dict[Arch, float]) -> None:
        """Evaluate one trial's arch (once per arch: NSGA-II proposes the same one again) and tell."""
        arch = self.space.arch_from_choices(trial.params)
        try:
            with _heartbeat(trial, self.heartbeat_interval):
                if arch not in known:
                    known[arch] = evaluate(supernet, val_batches, metric, arch=arch)
                kinds = dict.fromkeys([self.cost, *self.constraints])
                spent = {kind: self.arch_cost(arch, kind) for kind in kinds}
        except BaseException:  # interrupted or broken: the arch runs again on resume
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(trial.params)
            raise
        try:
            for kind, value in spent.items():
                trial.set_user_attr(f"cost/{kind}", value)
            for kind, limit in self.constraints.items():
                trial.set_constraint(kind, spent[kind] - limit)  # feasible when <= 0
            study.tell(trial, [known[arch], spent[self.cost]])
        except UpdateFinishedTrialError:
            log.warning("trial %d was taken for abandoned while it ran; its re-run counts instead",
                        trial.number)

    def _fail_abandoned(self, study: optuna.Study) -> None:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _abandoned(trial, self.grace_period):
                log.warning("trial %d of %s was abandoned; running its arch again",
                            trial.number, trial.user_attrs.get(WORKER, "an unknown worker"))
                # Its worker may have told it meanwhile, if we misjudged it: then leave it be.
                failed = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                if failed.state == TrialState.FAIL:
                    study.enqueue_trial(trial.params)

    # -- the result ------------------------------------------------------------------------
    def _candidates(self, study: optuna.Study, metric: str) -> list[Candidate]:
        """The distinct feasible archs of the complete trials, best metric first (cheaper on ties)."""
        found: dict[Arch, Candidate | None] = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            arch = self.space.arch_from_choices(trial.params)
            if arch in found:
                continue
            feasible = all(value <= 0 for value in trial.constraints.values())
            spent = {k: v for k, v in trial.user_attrs.items() if k.startswith("cost/")}
            found[arch] = Candidate(arch, {f"val/{metric}": trial.values[0], **spent}) if feasible else None
        ranked = [c for c in found.values() if c is not None]
        ranked.sort(key=lambda c: (-self._score(c, metric), self._cost(c)))
        return ranked

    def _pareto(self, ranked: list[Candidate], metric: str) -> list[Candidate]:
        """The non-dominated candidates, cheapest first (so the metric improves along the list)."""
        return pareto_front(ranked, f"val/{metric}", f"cost/{self.cost}", HIGHER_IS_BETTER[metric])

    def _score(self, candidate: Candidate, metric: str) -> float:
        return score(candidate.metrics[f"val/{metric}"], metric)

    def _cost(self, candidate: Candidate) -> float:
        return candidate.metrics[f"cost/{self.cost}"]

    def _result(self, study: optuna.Study, metric: str) -> SearchResult:
        ranked = self._candidates(study, metric)
        if not ranked:
            limits = ", ".join(f"{k} <= {v:g}" for k, v in self.constraints.items())
            raise ConfigError(f"none of the {self.total_trials} trials meets the constraints ({limits}); "
                              "loosen them or run more generations")
        return SearchResult(best=ranked[0].arch, ranked=ranked, pareto=self._pareto(ranked, metric))

    def _report(self, study: optuna.Study, ctx: SearchContext, metric: str, logged: int) -> int:
        """One log line per finished generation; returns the last generation logged."""
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done // self.population <= logged:
            return logged
        ranked = self._candidates(study, metric)
        if ranked:
            best, front = ranked[0], self._pareto(ranked, metric)
            log.info("evolution: generation %d/%d (%d trials): best val/%s %.4g at %s %.4g; "
                     "Pareto front of %d", done // self.population, self.generations, done, metric,
                     best.metrics[f"val/{metric}"], self.cost, self._cost(best), len(front))
            ctx.log_metrics({"search/best_val": best.metrics[f"val/{metric}"],
                             "search/pareto_size": len(front)}, step=done)
        else:
            log.info("evolution: generation %d/%d (%d trials): none feasible yet",
                     done // self.population, self.generations, done)
        return done // self.population


def _is_url(storage: str) -> bool:
    """A database URL ("sqlite:///...", "postgresql://...") rather than a journal file path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", storage) is not None  # one letter: a drive (C:)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _abandoned(trial: FrozenTrial, grace_period: float) -> bool:
    """Whether a RUNNING trial's worker is gone: a dead process (or this one) on this host, or a
    heartbeat older than the grace period."""
    host, _, pid = str(trial.user_attrs.get(WORKER, "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        # This worker runs one trial at a time and asks none while it runs one: a trial of
        # its own that is still running was left by an earlier, interrupted call.
        if int(pid) == os.getpid() or not _alive(int(pid)):
            return True
    beat = trial.user_attrs.get(HEARTBEAT, trial.datetime_start.timestamp())
    return time.time() - beat > grace_period


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _heartbeat(trial: Trial, interval: float):
    """Renew the trial's heartbeat from a thread while the body runs."""
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            try:
                trial.set_user_attr(HEARTBEAT, time.time())
            except Exception as err:  # a busy storage: the next beat may get through
                log.warning("heartbeat of trial %d failed: %s", trial.number, err)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
