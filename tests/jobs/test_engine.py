"""Standalone jobs on submitit (nas.jobs.engine): a finished job is never trained again, a failed
one is summed up in one line while the others train, local jobs run in processes of their own,
a killed one resumes from its last epoch, and on SLURM the configured options reach the sbatch
script and each array task writes its result."""

import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import time

import cloudpickle
import pytest
import torch
from omegaconf import OmegaConf
from submitit.core import submission
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import DelayedSubmission, JobPaths
from submitit.slurm.slurm import SlurmJobEnvironment
from submitit.slurm.test_slurm import mock_requeue, mocked_slurm

from nas.errors import ConfigError
from nas.jobs import engine
from nas.jobs.engine import JobsConfig, JobsFailed, SlurmConfig, run_jobs
from nas.jobs.job import Budget, Job, read_result, result_path, write_result
from nas.model import ModelSpec
from nas.tasks import build_task
from nas.training import standalone
from nas.training.retrain import RetrainModule
from tests.helpers import TINY_TASK, compose_config, load_space

IN_THIS_PROCESS = JobsConfig(executor="debug")
ARCH = {"depth": 1, "layers": [{"attention": "full", "heads": 2, "ffn_dim": 32}]}


def fake_job(seed: int) -> Job:
    return Job({"arch": ARCH, "space": {}, "shape": {}}, {}, "", seed, Budget(), {})


def fake_training(job: Job, checkpoints=None) -> dict:
    """What `standalone.train` returns, without the training (read back and checked as a real result)."""
    return {
        "arch": job.model["arch"],
        "seed": job.seed,
        "budget": dataclasses.asdict(job.budget),
        "op_revisions": job.op_revisions,
        "metric": "acc",
        "val": 0.5,
        "val_loss": 1.0,
        "train_seconds": 0.0,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def probing_training(job: Job, checkpoints) -> dict:
    """`fake_training`, noting what the job's process was given: its torch threads and GPUs."""
    seen = {"threads": torch.get_num_threads(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (checkpoints.parent / f"{job.id}.seen.json").write_text(json.dumps(seen))
    return fake_training(job)


def counting(calls: list, fails: set = frozenset()):
    """`fake_training` that notes each call, raising for the seeds in `fails` (in this process)."""

    def train(job, checkpoints=None):
        calls.append(job.id)
        if job.seed in fails:
            raise ValueError("no such\nattention")  # two lines, reported as one
        return fake_training(job)

    return train


@pytest.fixture
def pickled_by_value():
    """Local jobs unpickle their function in a fresh process: this module goes along by value, so
    they need not import it (pytest's rootdir may not be on their path)."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_a_rerun_trains_only_the_jobs_without_a_result(tmp_path):
    finished, missing = fake_job(0), fake_job(1)
    write_result(tmp_path, finished, fake_training(finished))
    before = result_path(tmp_path, finished).stat().st_mtime_ns
    calls = []
    summary = run_jobs([finished, missing, missing], tmp_path, counting(calls), IN_THIS_PROCESS)
    assert calls == [missing.id]  # listed twice, trained once; the finished one not at all
    assert summary.trained == [missing] and summary.reused == [finished] and summary.failed == []
    assert result_path(tmp_path, finished).stat().st_mtime_ns == before
    assert read_result(tmp_path, missing) == fake_training(missing)
    again = run_jobs([finished, missing], tmp_path, counting(calls), IN_THIS_PROCESS)
    assert calls == [missing.id] and again.trained == [] and again.reused == [finished, missing]
    assert not list((tmp_path / "submitit").iterdir())  # the jobs' pickles and logs go once all succeeded


def test_a_failed_job_is_summed_up_in_one_line_and_the_others_train(tmp_path, caplog):
    good, bad = fake_job(0), fake_job(1)
    calls = []
    with caplog.at_level("INFO", logger="nas"), pytest.raises(JobsFailed) as err:
        run_jobs([bad, good], tmp_path, counting(calls, fails={1}), IN_THIS_PROCESS)
    message = str(err.value)
    assert message.startswith(
        f"1 of 2 standalone jobs failed, the first {bad.id} (seed 1): ValueError: no such attention"
    )
    assert "\n" not in message and message.endswith("a rerun trains only the jobs without a result")
    log_file = message.split("(log: ")[1].split(")")[0]
    assert "ValueError: no such" in open(log_file).read()  # the traceback is kept in the job's log
    assert calls == [bad.id, good.id] and read_result(tmp_path, good) is not None
    assert "standalone jobs: 1 trained, 0 reused, 1 failed" in caplog.text
    assert f"  {bad.id} (seed 1) failed: ValueError: no such attention" in caplog.text
    fixed = run_jobs([bad, good], tmp_path, counting(calls), IN_THIS_PROCESS)
    assert calls[2:] == [bad.id] and fixed.trained == [bad] and fixed.reused == [good]


def test_local_jobs_run_in_processes_of_their_own_with_the_cores_and_gpus_split(
    tmp_path, monkeypatch, pickled_by_value
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what this process sees, the jobs see
    monkeypatch.setattr(engine, "cores", lambda: 4)
    monkeypatch.setattr(engine, "POLL_SECONDS", 0.1)
    jobs = [fake_job(seed) for seed in range(2)]
    summary = run_jobs(jobs, tmp_path, probing_training, JobsConfig(executor="local"), workers=2)
    assert summary.trained == jobs
    pids = {read_result(tmp_path, job)["pid"] for job in jobs}
    assert os.getpid() not in pids and len(pids) == 2
    seen = [json.loads((tmp_path / f"{job.id}.seen.json").read_text()) for job in jobs]
    assert seen == [{"threads": 2, "gpus": "3,5"}] * 2  # 4 cores / 2 jobs at once
    assert run_jobs(jobs, tmp_path, probing_training, JobsConfig(executor="local"), workers=2).trained == []


def test_local_jobs_are_given_the_gpus_of_this_process_by_index(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert engine.local_gpus() == tuple(range(torch.cuda.device_count()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 0")
    assert engine.local_gpus() == (2, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5c1f")  # submitit gives a local job GPUs by index only
    with pytest.raises(ConfigError, match=r"^CUDA_VISIBLE_DEVICES='MIG-5c1f': local jobs are given GPUs by index"):
        engine.check_engine(JobsConfig(executor="local"), None)


def tiny_job(tmp_path, epochs: int) -> Job:
    """A real standalone job: the tiny space's smallest arch on a small recall task."""
    cfg = compose_config("search", tmp_path / "run", [*TINY_TASK, "task.num_train=64"])
    task = build_task(OmegaConf.to_container(cfg.task, resolve=True), cfg.paths.data_dir, "test")
    space = load_space("tiny")
    spec = ModelSpec(space.smallest(), space, task.shape)
    budget = Budget(max_epochs=epochs, warmup_steps=2)
    return Job(spec.to_dict(), task.record(), str(cfg.paths.data_dir), 0, budget, {"accelerator": "cpu", "devices": 1})


def killed_in_epoch_1(job: Job, checkpoints) -> dict:
    """A local job whose process is killed (SIGKILL: no handler runs) as its second epoch starts."""

    def die(module):
        if module.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    RetrainModule.on_train_epoch_start = die
    return standalone.train(job, checkpoints=checkpoints)


def noting_epochs(job: Job, checkpoints) -> dict:
    """`standalone.train`, noting the epochs it trains."""

    def note(module):
        with open(checkpoints.parent / "epochs.txt", "a") as trained:
            trained.write(f"{module.current_epoch}\n")

    RetrainModule.on_train_epoch_start = note
    return standalone.train(job, checkpoints=checkpoints)


@pytest.mark.slow  # local processes import torch and Lightning and train for real: about a minute on 2 loaded cores
def test_a_killed_local_job_resumes_at_its_last_epoch_and_ends_as_if_never_killed(tmp_path, pickled_by_value):
    job = tiny_job(tmp_path, epochs=2)
    uninterrupted = standalone.train(job)
    local = JobsConfig(executor="local")
    with pytest.raises(JobsFailed, match=r"ended without a result \(UncompletedJobError"):
        run_jobs([job], tmp_path / "results", killed_in_epoch_1, local, workers=1)
    assert (tmp_path / "results" / "in_progress" / f"{job.id}.ckpt").is_file()
    assert read_result(tmp_path / "results", job) is None
    assert run_jobs([job], tmp_path / "results", noting_epochs, local, workers=1).trained == [job]
    assert (tmp_path / "results" / "epochs.txt").read_text() == "1\n"  # epoch 0 was not trained again
    resumed = read_result(tmp_path / "results", job)
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-5)
    assert resumed["val"] == uninterrupted["val"]
    assert not list((tmp_path / "results" / "in_progress").iterdir())  # the checkpoint goes with the result


def test_on_slurm_the_options_reach_sbatch_and_each_array_task_writes_its_result(tmp_path, monkeypatch):
    """submitit's mocked SLURM (its own test tooling) takes the sbatch call; this test then plays
    the nodes: the first array task reaches its time limit and is requeued, then every task runs
    in this process as a node would run it."""
    monkeypatch.setattr(engine, "POLL_SECONDS", 0.05)
    jobs = [fake_job(seed) for seed in range(3)]
    slurm = SlurmConfig(
        partition="gpu", gpus_per_job=2, cpus_per_job=3, mem_gb=32, time_minutes=90, sbatch={"qos": "high"}
    )
    config, done = JobsConfig(executor="slurm", slurm=slurm), {}
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)}
    threads = torch.get_num_threads()
    try:
        with mocked_slurm() as cluster:
            engine.check_engine(config, 2)  # srun is found
            driver = threading.Thread(
                target=lambda: done.update(summary=run_jobs(jobs, tmp_path, fake_training, config, 2))
            )
            driver.start()
            script = wait_for(lambda: next(tmp_path.glob("submitit/*/*_submission.sh"), None))
            lines = set(script.read_text().splitlines())
            for option in ("partition=gpu", "gpus-per-node=2", "cpus-per-task=3", "mem=32GB", "time=90", "qos=high"):
                assert f"#SBATCH --{option}" in lines
            assert "#SBATCH --array=0-2%2" in lines and "#SBATCH --job-name=nas-rank" in lines  # `workers` at once
            array = script.name.split("_")[0]

            first = JobPaths(script.parent, job_id=f"{array}_0")
            wait_for(lambda: first.submitted_pickle.is_file() or None)
            with cluster.job_context(f"{array}_0"):
                timed_out = SignalHandler(SlurmJobEnvironment(), first, DelayedSubmission.load(first.submitted_pickle))
                timed_out._start_time -= 90 * 60  # as if it had run to its time limit
                with pytest.raises(SystemExit), mock_requeue(called_with=2):  # requeued: 2 more time limits allowed
                    timed_out.checkpoint_and_try_requeue(signal.SIGUSR2)
            assert DelayedSubmission.load(first.submitted_pickle).args == (jobs[0],)  # the same job again

            for task in range(3):
                with cluster.job_context(f"{array}_{task}"):
                    submission.process_job(script.parent)
                assert torch.get_num_threads() == 3  # the job's torch threads: its cpus
            driver.join(timeout=60)
    finally:
        for number, handler in handlers.items():  # a node's job installs submitit's signal handlers
            signal.signal(number, handler)
        torch.set_num_threads(threads)
    assert done["summary"].trained == jobs and all(read_result(tmp_path, job) for job in jobs)


def wait_for(find, seconds: float = 30.0):
    end = time.monotonic() + seconds
    while (found := find()) is None:
        assert time.monotonic() < end, "not found in time"
        time.sleep(0.05)
    return found
