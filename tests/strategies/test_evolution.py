"""Evolution (SPOS + NSGA-II with Optuna): planted tasks, shared and resumed studies, bad input."""

import contextlib
import multiprocessing
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from nas import cost
from nas.errors import ConfigError
from nas.model import ModelShape
from nas.pipeline import check_storage
from nas.space import Arch, LayerArch, SearchSpace
from nas.strategies import evolution
from nas.strategies import study as shared
from nas.supernet import Supernet
from nas.training.run import run_search

from ..postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from .planted import FetchTask, make, planted_space, trainer

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retry API

WIDE = {  # 72 archs: enough distinct ones that trials keep evaluating
    "name": "wide",
    "dim": 32,
    "head_dim": 16,
    "depth": [1, 2],
    "layer": {"attention": {"full": {}, "local": {"window": 4}}, "heads": [1, 2], "ffn_dim": [32, 64]},
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on busy shared cores threads wait for each other
    (a forward pass ran 40x slower with two than with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def evolution_strategy(space, **options):
    options = {"seed": 0, "population": 4, "generations": 2, "cost": "flops", **options}
    return make("evolution", space, **options)


def untrained(space_dict=WIDE):
    """An untrained supernet with fixed weights, and random validation batches."""
    torch.manual_seed(0)
    space = SearchSpace.from_dict(space_dict)
    net = Supernet(space, ModelShape(10, 10, 24, "tokens"))
    tokens = torch.randint(1, 10, (2, 16, 24))
    batches = [{"tokens": t, "mask": torch.ones_like(t, dtype=torch.bool), "target": t} for t in tokens]
    return space, net, batches


def finish(strategy, net, batches):
    """The search stage alone, on an untrained supernet (no Lightning)."""
    strategy.attach(net)
    return strategy.finish(SimpleNamespace(supernet=net, metric="acc", log_metrics=lambda metrics, step: None), batches)


def dominates(a, b):
    """Points to minimize: `a` is as good as `b` in every objective and better in one."""
    return a != b and all(x <= y for x, y in zip(a, b))


def load(storage, name="evolution"):
    if storage.startswith("journal:"):
        backend = optuna.storages.journal.JournalFileBackend(storage.removeprefix("journal:"))
        storage = optuna.storages.JournalStorage(backend)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(params=["sqlite", "journal", "postgres"])
def storage(request, tmp_path):
    """The storage value of each kind the storage config group offers."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    files = {"sqlite": f"sqlite:///{tmp_path / 'optuna.db'}", "journal": f"journal:{tmp_path / 'journal.log'}"}
    return files[request.param]


def test_a_global_op_wins_where_it_matters(tmp_path):
    torch.manual_seed(0)
    space, task = planted_space(), FetchTask(distance=23)
    net = Supernet(space, task.shape)
    strategy = evolution_strategy(space, population=4, generations=3)
    _, result = run_search(net, strategy, task, "acc", trainer(tmp_path, epochs=4), lr=3e-3)
    assert "full" in {layer.attention for layer in result.best.layers}
    assert result.ranked[0].arch == result.best and result.ranked[0].metrics["val/acc"] > 0.9

    # the front trades accuracy for FLOPs: cheapest first, no member dominated, every other
    # candidate dominated by a member; the most accurate member is the best arch
    def point(c):
        return c.metrics["cost/flops"], -c.metrics["val/acc"]

    front = [point(c) for c in result.pareto]
    assert front == sorted(front) and not any(dominates(a, b) for a in front for b in front)
    others = [point(c) for c in result.ranked if c not in result.pareto]
    assert all(any(dominates(a, b) for a in front) for b in others)
    assert result.pareto[-1].arch == result.best


def test_a_flops_constraint_picks_the_cheap_op_when_it_suffices(tmp_path):
    torch.manual_seed(0)
    space, task = planted_space(), FetchTask(distance=1, size=1024)
    net = Supernet(space, task.shape)
    journal = f"journal:{tmp_path / 'journal.log'}"  # a journal file works as storage, too
    # one local layer costs 427k FLOPs, one full layer 482k: only the cheap op fits
    strategy = evolution_strategy(space, constraints={"flops": 450_000}, storage=journal)
    _, result = run_search(net, strategy, task, "acc", trainer(tmp_path, epochs=2), lr=3e-3)
    assert result.best == Arch(1, (LayerArch("local", 2, 64),))
    assert result.ranked[0].metrics["val/acc"] > 0.9
    assert all(c.metrics["cost/flops"] <= 450_000 for c in result.ranked + result.pareto)
    # archs with full attention were tried, and excluded by the constraint alone
    study = load(journal)
    tried = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "full" in t.params.values()]
    assert tried and all(t.constraints["flops"] > 0 for t in tried)


def search_worker(worker, storage, start, results):
    """One search worker, in its own process with its own storage connection; reports which archs
    it evaluated."""
    torch.set_num_threads(1)  # what DataLoader workers do: a forked OpenMP pool is unusable
    space, net, batches = untrained()  # the same seed: the same supernet in every worker
    evaluated, real = [], evolution.evaluate_with_loss

    def counted(supernet, val_batches, metric, arch):
        evaluated.append(arch)
        # As slow as a real evaluation, about: on a loaded machine a forked worker can start a
        # second late, and with 10 ms evaluations the other had run all 16 trials by then.
        time.sleep(0.1)
        return real(supernet, val_batches, metric, arch=arch)

    evolution.evaluate_with_loss = counted  # in this process only
    strategy = evolution_strategy(space, seed=worker, generations=4, storage=storage)
    start.wait()  # start together, so that the workers really share the study
    results.put((finish(strategy, net, batches).best, evaluated))


def test_two_workers_share_one_study(storage):
    # fork: a fresh interpreter would spend longer importing torch than the search takes
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=search_worker, args=(i, storage, start, results)) for i in range(2)]
    for worker in workers:
        worker.start()
    found = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    trials = load(storage).get_trials()
    assert [t.number for t in trials] == list(range(16))  # no trial lost, none duplicated or extra
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers_of = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers_of)) == 2, f"one worker ran every trial: {workers_of}"
    assert found[0][0] == found[1][0]  # both chose from the whole study, not from their own trials
    # An arch proposed again is looked up, not evaluated again. A worker may evaluate nothing of its
    # own (every arch it was proposed the other had scored already): that is the sharing working.
    for _, evaluated in found:
        assert len(set(evaluated)) == len(evaluated)
    evaluated = [arch for _, archs in found for arch in archs]
    space = SearchSpace.from_dict(WIDE)
    assert set(evaluated) == {space.arch_from_choices(t.params) for t in trials}


def stuck_worker(storage, started):
    """A worker of another host that hangs in its first evaluation: only its heartbeat can tell
    the others that it died."""
    torch.set_num_threads(1)
    shared.worker_id = lambda: "elsewhere:1"
    space, net, batches = untrained()

    def hang(*args, **kwargs):
        started.set()
        time.sleep(600)

    evolution.evaluate_with_loss = hang
    finish(evolution_strategy(space, storage=storage, heartbeat_interval=1, grace_period=2), net, batches)


def test_the_trial_of_a_killed_worker_is_retried(storage):
    context = multiprocessing.get_context("fork")
    started = context.Event()
    stuck = context.Process(target=stuck_worker, args=(storage, started))
    stuck.start()
    assert started.wait(timeout=120)
    os.kill(stuck.pid, signal.SIGKILL)
    stuck.join()
    [killed] = [t for t in load(storage).get_trials() if t.state == TrialState.RUNNING]

    space, net, batches = untrained()
    strategy = evolution_strategy(space, seed=1, storage=storage, heartbeat_interval=1, grace_period=2)
    finish(strategy, net, batches)
    trials = load(storage).get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8  # exactly population * generations, the retry among them
    [retry] = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params


def test_an_interrupted_search_resumes_from_its_storage(tmp_path, monkeypatch):
    space, net, batches = untrained()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    calls = []

    def interrupted(*args, **kwargs):  # Ctrl-C during the third evaluation
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return 0.5, 1.0

    monkeypatch.setattr(evolution, "evaluate_with_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finish(evolution_strategy(space, storage=storage), net, batches)
    before = load(storage).get_trials()
    *done, failed, waiting = before  # the interrupted trial failed; a copy waits to run again
    assert len(done) >= 2 and all(t.state == TrialState.COMPLETE for t in done)
    assert (failed.state, waiting.state) == (TrialState.FAIL, TrialState.WAITING)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(waiting) == failed.number

    monkeypatch.undo()
    result = finish(evolution_strategy(space, storage=storage), net, batches)
    after = load(storage).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in after) == 8 and len(after) == 9
    # the first trials were kept, not run again; the interrupted arch was run again
    assert [(t.values, t.datetime_complete) for t in after[: len(done)]] == [
        (t.values, t.datetime_complete) for t in done
    ]
    rerun = after[waiting.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == failed.params

    # a finished search resumed again runs nothing and gives the same answer
    again = finish(evolution_strategy(space, storage=storage), net, batches)
    assert len(load(storage).get_trials()) == 9 and again.best == result.best


def stopped_worker(storage, evaluations, how, started):
    """A search that stops in its `evaluations`-th evaluation: Ctrl-C (the trial fails, a copy
    waits to run again) or a SIGKILL from the parent (the trial is left RUNNING)."""
    torch.set_num_threads(1)
    space, net, batches = untrained()
    real, calls = evolution.evaluate_with_loss, []

    def stop(*args, **kwargs):
        calls.append(args)
        if len(calls) == evaluations:
            if how == "interrupt":
                raise KeyboardInterrupt
            started.set()
            time.sleep(600)  # until killed
        return real(*args, **kwargs)

    evolution.evaluate_with_loss = stop
    with contextlib.suppress(KeyboardInterrupt):
        finish(evolution_strategy(space, storage=storage, generations=4), net, batches)


@pytest.mark.parametrize("how", ["interrupt", "kill"])
@pytest.mark.parametrize("evaluations", [3, 7])  # in the first generation, in the second
def test_a_search_stopped_mid_trial_resumes_to_the_uninterrupted_result(tmp_path, how, evaluations):
    space, net, batches = untrained()
    whole = f"journal:{tmp_path / 'whole.log'}"
    expected = finish(evolution_strategy(space, storage=whole, generations=4), net, batches)

    stopped = f"journal:{tmp_path / 'stopped.log'}"
    context = multiprocessing.get_context("fork")  # its own process, so that it can be killed
    started = context.Event()
    worker = context.Process(target=stopped_worker, args=(stopped, evaluations, how, started))
    worker.start()
    if how == "kill":
        assert started.wait(timeout=120)
        os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=120)
    left = load(stopped).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in left) < 16
    assert left[-1].state == (TrialState.RUNNING if how == "kill" else TrialState.WAITING)

    resumed = finish(evolution_strategy(space, storage=stopped, generations=4), net, batches)
    # the same archs proposed in the same order, with the same values: the same search
    complete = [
        [(t.params, t.values) for t in load(storage).get_trials(states=(TrialState.COMPLETE,))]
        for storage in (whole, stopped)
    ]
    assert complete[0] == complete[1] and len(complete[0]) == 16
    assert [c.arch for c in resumed.ranked] == [c.arch for c in expected.ranked]
    assert [c.arch for c in resumed.pareto] == [c.arch for c in expected.pareto]


def open_write(path, ready):
    """A write transaction on an SQLite file that has written pages into the file (and their old
    contents into the journal) and never commits: killed, it leaves a hot journal."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA cache_size=1")  # spill the changed pages into the file before any commit
    db.execute("BEGIN IMMEDIATE")
    if db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'trials'").fetchone()[0]:
        db.execute("UPDATE trials SET number = number + 1000")
    db.execute("CREATE TABLE filler (x BLOB)")
    for _ in range(200):
        db.execute("INSERT INTO filler VALUES (randomblob(4000))")
    ready.set()
    time.sleep(600)  # until killed


@pytest.mark.parametrize("when", ["first write", "with trials"])
def test_a_hot_journal_is_rolled_back_not_called_damage(tmp_path, caplog, when):
    space, net, batches = untrained()
    db = tmp_path / "optuna.db"
    storage = f"sqlite:///{db}"
    expected = finish(
        evolution_strategy(space, storage=storage if when == "with trials" else None, generations=1), net, batches
    )
    trials = [(t.params, t.values) for t in load(storage).get_trials()] if when == "with trials" else []

    context = multiprocessing.get_context("fork")
    ready = context.Event()
    writer = context.Process(target=open_write, args=(str(db), ready))
    writer.start()
    assert ready.wait(timeout=60)
    os.kill(writer.pid, signal.SIGKILL)  # a kill in the middle of a write
    writer.join()
    journal = db.with_name("optuna.db-journal")
    assert journal.stat().st_size > 0
    with (
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as read_only,
        pytest.raises(sqlite3.DatabaseError),
    ):  # hot: a read-only open cannot roll it back
        read_only.execute("PRAGMA integrity_check")

    check_storage(db)  # rolls it back, as any write access to the file would
    assert not journal.exists()
    if when == "first write":  # nothing was ever committed: the file is empty again
        assert db.stat().st_size == 0 and "holds no trial; the study starts over" in caplog.text
    result = finish(evolution_strategy(space, storage=storage, generations=1), net, batches)
    assert [(t.params, t.values) for t in load(storage).get_trials()][: len(trials)] == trials  # none lost
    assert [c.arch for c in result.ranked] == [c.arch for c in expected.ranked]


def test_an_empty_database_file_starts_the_study_over(tmp_path, caplog):
    """SQLite creates the file when it opens it and writes it at the first commit: a kill between
    the two leaves 0 bytes, which no stored trial can have. The study starts over and says so."""
    space, net, batches = untrained()
    expected = finish(evolution_strategy(space, generations=1), net, batches)  # in memory
    db = tmp_path / "optuna.db"
    db.touch()
    check_storage(db)
    assert "optuna.db is empty" in caplog.text and "the study starts over" in caplog.text
    result = finish(evolution_strategy(space, storage=f"sqlite:///{db}", generations=1), net, batches)
    assert [c.arch for c in result.ranked] == [c.arch for c in expected.ranked]
    assert sum(t.state == TrialState.COMPLETE for t in load(f"sqlite:///{db}").get_trials()) == 4


def test_trials_of_dead_workers_are_failed_and_run_again(tmp_path):
    space, net, batches = untrained()
    storage = f"journal:{tmp_path / 'journal.log'}"
    finish(evolution_strategy(space, storage=storage, generations=1), net, batches)
    study = load(storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    distributions = {k: CategoricalDistribution(v) for k, v in space.decisions().items()}
    left = []
    # a dead process of this host, with no heartbeat at all: failed at once, without waiting
    # for a grace period; a worker elsewhere whose last heartbeat is an hour old
    for worker, beat in [(f"{socket.gethostname()}:{dead.pid}", None), ("elsewhere:1", time.time() - 3600)]:
        trial = study.ask(distributions)
        trial.set_user_attr("worker", worker)
        if beat is not None:
            study._storage.set_trial_system_attr(trial._trial_id, shared.HeartbeatJournalStorage.BEAT, beat)
        left.append(trial.number)
    finish(evolution_strategy(space, storage=storage, generations=2), net, batches)
    trials = load(storage).get_trials()
    assert [trials[n].state for n in left] == [TrialState.FAIL] * 2
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8
    for n in left:
        [retry] = [t for t in complete if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == n]
        assert retry.params == trials[n].params


def test_state_dict_round_trip_gives_the_same_search():
    space, net, batches = untrained()
    original = evolution_strategy(space, seed=3)
    original.rng.random()  # mid-search: the RNG has moved on
    copy = evolution_strategy(space, seed=0)
    copy.load_state_dict(original.state_dict())
    results = [finish(s, net, batches) for s in (original, copy)]
    assert [c.arch for c in results[0].ranked] == [c.arch for c in results[1].ranked]
    assert len(results[0].ranked) > 1


def test_an_impossible_constraint_names_the_cheapest_cost():
    space, net, _ = untrained(planted_space().to_dict())
    strategy = evolution_strategy(space, constraints={"flops": 1000})
    message = "no arch in space 'planted' meets constraints.flops <= 1000: the cheapest, 1 x (local"
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        strategy.attach(net)
    cheapest = cost.arch_cost(
        Arch(1, (LayerArch("local", 2, 64),)), space, ModelShape(10, 10, 24, "tokens"), 24, "flops"
    )
    assert float(re.search(r"costs (\S+) FLOPs", str(err.value)).group(1)) == cheapest
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"cost": "energy"}, "strategy.cost: unknown cost 'energy'; allowed: params, flops, memory, latency"),
        ({"constraints": {"watts": 3}}, "strategy.constraints: unknown cost 'watts'; allowed: params"),
        ({"constraints": {"params": -1}}, "strategy.constraints.params=-1: must be a finite number > 0"),
        ({"constraints": {"params": float("nan")}}, "strategy.constraints.params=nan: must be a finite number > 0"),
        ({"constraints": 5}, "strategy.constraints=5: must be a mapping or null"),
        ({"population": 1}, "strategy.population=1: must be a whole number >= 2"),
        ({"mutation_prob": 1.5}, "strategy.mutation_prob=1.5: must be a number in [0, 1]"),
        ({"heartbeat_interval": 0}, "strategy.heartbeat_interval must be a positive whole number of seconds; got 0"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        evolution_strategy(planted_space(), **options)


@pytest.mark.parametrize(
    "storage, message",
    [
        (
            "sqlite:/runs/optuna.db",
            "'sqlite:/runs/optuna.db' is neither a database URL nor a journal file; "
            "allowed: sqlite:///<file>, postgresql://",
        ),
        ("runs/optuna.journal", "is neither a database URL nor a journal file; allowed: "),
        ("sqlite://", "names no SQLite file (three slashes: sqlite:///runs/optuna.db)"),
        ("mysql://search@db.example/nas", "unsupported database 'mysql'; allowed: "),
        ("journal:", "names no file; allowed: "),
    ],
)
def test_a_bad_storage_is_a_one_line_error_before_training(storage, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        evolution_strategy(planted_space(), storage=storage)  # made before the supernet trains
    assert "\n" not in str(err.value)


def test_an_unreachable_database_is_a_one_line_error_before_training():
    pytest.importorskip("psycopg")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space, net, _ = untrained()
    strategy = evolution_strategy(space, storage=f"postgresql://nas:secret@127.0.0.1:{port}/nas")
    shown = f"storage postgresql+psycopg://nas:***@127.0.0.1:{port}/nas: cannot connect ("
    with pytest.raises(ConfigError, match=re.escape(shown)) as err:
        strategy.attach(net)  # the search module attaches its strategy before training
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_a_study_of_another_search_is_not_continued(tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    space, net, batches = untrained(planted_space().to_dict())
    finish(evolution_strategy(space, storage=storage, generations=1), net, batches)
    space, net, batches = untrained()
    with pytest.raises(ConfigError, match=r"belongs to another search \(its space differ\)"):
        finish(evolution_strategy(space, storage=storage, generations=1), net, batches)
