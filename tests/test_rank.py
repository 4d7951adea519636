"""nas-rank on a tiny search run: the files it writes, resume after a kill, the shared work list
(claims), several worker processes, and one-line errors for a bad run folder or archs value."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nas import pipeline, rank_pipeline
from nas.cli import rank as rank_cli
from nas.errors import ConfigError
from nas.jobs import queue
from nas.model import ModelSpec
from nas.ops.attention import revisions
from nas.ranking import read_ranking, seed_agreement, stratified_archs, write_archs
from nas.space import Arch
from nas.tasks import build_task
from nas.training import standalone
from nas.training.retrain import RetrainModule
from nas.training.search import load_supernet
from tests.cli.conftest import TINY, compose_config

# in this process (counted); the search's own pick has a test of its own
TINY_RANK = ["budget.max_epochs=1", "budget.warmup_steps=2", "workers=1", "search_pick=false"]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """A finished tiny search, with the .hydra/config.yaml that nas-search's Hydra writes."""
    run_dir = tmp_path_factory.mktemp("search") / "run"
    cfg = compose_config("search", run_dir, [*TINY, "strategy=random", "strategy.samples=2", "retrain.enabled=false"])
    pipeline.run(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def rank_config(run_dir, *overrides):
    return compose_config("rank", run_dir.parent / "rank_cmd", [f"run={run_dir}", *TINY_RANK, *overrides])


def counting(monkeypatch):
    """Count standalone trainings (run in this process with workers=1)."""
    calls = []
    real = standalone.train

    def train(job, **options):
        calls.append(job.id)
        return real(job, **options)

    monkeypatch.setattr(standalone, "train", train)
    return calls


def test_rank_writes_its_files_and_a_rerun_trains_only_what_is_missing(search_run, monkeypatch):
    calls = counting(monkeypatch)
    cfg = rank_config(search_run, "archs=3")
    first = rank_pipeline.rank(cfg)
    assert first.trained == 3 and len(calls) == 3
    out = search_run / "rank"
    rows = read_ranking(out / "ranking.csv", "acc")
    assert [r.arch for r in rows] == [r.arch for r in first.rows] and all(len(r.standalone) == 1 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kendall_tau"] == pytest.approx(first.summary.kendall_tau, nan_ok=True)
    assert summary["regret"] == first.summary.regret >= 0
    assert summary["standalone_seed_tau"] is None and "seed agreement" not in first.text  # one seed
    assert (out / "archs.yaml").is_file() and list((out / "tensorboard").iterdir())
    results = sorted((out / "standalone").glob("*.json"))
    assert len(results) == 3 and not list((out / "standalone").glob("*.claim"))
    space = load_supernet(search_run / "checkpoints" / "last.ckpt").space
    for result in map(json.loads, (p.read_text() for p in results)):  # what its ops computed then
        assert result["op_revisions"] == revisions(space.op_types(Arch.from_dict(result["arch"])))
    # what the ground truth cost, by job: read back from the result files
    assert summary["standalone_train_seconds"] == {p.stem: json.loads(p.read_text())["train_seconds"] for p in results}
    assert f"{sum(summary['standalone_train_seconds'].values()):.0f} s of training summed" in first.text

    # a kill loses at most the jobs that had not finished: here, one result is gone
    lost = results[1]
    kept = {p: p.read_text() for p in results if p != lost}
    lost.unlink()
    again = rank_pipeline.rank(cfg)
    assert again.trained == 1 and calls[3:] == [lost.stem]
    assert all(p.read_text() == text for p, text in kept.items())  # finished jobs untouched
    assert rank_pipeline.rank(cfg).trained == 0 and len(calls) == 4
    assert [r.inherited for r in again.rows] == [r.inherited for r in first.rows]

    # a result of another metric (bpb has no upper bound, so val 5.0 passes its range check) is refused
    tampered = json.loads(lost.read_text())
    lost.write_text(json.dumps({**tampered, "metric": "bpb", "val": 5.0}))
    with pytest.raises(ConfigError, match=f"standalone result .*{lost.name}: its metric is not this task's"):
        rank_pipeline.rank(cfg)
    lost.write_text(json.dumps(tampered))


def test_an_arch_file_and_more_seeds_reuse_finished_jobs(search_run, monkeypatch, tmp_path):
    calls = counting(monkeypatch)
    rank_pipeline.rank(rank_config(search_run, "archs=3"))  # the first test's jobs, or these three
    before = len(calls)
    archs = stratified_archs(load_supernet(search_run / "checkpoints" / "last.ckpt").space, 3, seed=0)
    write_archs(tmp_path / "archs.yaml", archs[:2])
    outcome = rank_pipeline.rank(rank_config(search_run, f"archs={tmp_path / 'archs.yaml'}", "seeds=[0,1]"))
    assert len(calls) - before == 2  # seed 0 of both archs had finished; seed 1 trains
    assert [r.arch for r in outcome.rows] == archs[:2] and all(len(r.standalone) == 2 for r in outcome.rows)
    summary = json.loads((outcome.dir / "summary.json").read_text())  # two seeds: how far they agree
    assert summary["standalone_seed_tau"] == pytest.approx(
        seed_agreement([r.standalone for r in outcome.rows]), nan_ok=True
    )
    assert "seed agreement" in outcome.text
    pick = outcome.rows[outcome.summary.pick]  # and the regret on each seed alone
    assert summary["regret_per_seed"] == [
        max(r.standalone[s] for r in outcome.rows) - pick.standalone[s] for s in (0, 1)
    ]
    assert "on each seed alone: " in outcome.text


def test_runs_pointed_at_one_standalone_dir_train_each_job_once(search_run, monkeypatch, tmp_path):
    """`standalone_dir=`: a second search run of the same task and space (here a copy) reuses the
    first one's results, and neither writes into its own rank/standalone."""
    calls = counting(monkeypatch)
    other = tmp_path / "other_run"
    shutil.copytree(search_run, other, ignore=shutil.ignore_patterns("rank"))
    shared = tmp_path / "shared"
    first = rank_pipeline.rank(rank_config(search_run, "archs=2", "seed=3", f"standalone_dir={shared}"))
    assert first.trained == 2 and len(calls) == 2 and len(list(shared.glob("*.json"))) == 2
    second = rank_pipeline.rank(rank_config(other, "archs=2", "seed=3", f"standalone_dir={shared}"))
    assert second.trained == 0 and len(calls) == 2
    assert [r.standalone for r in second.rows] == [r.standalone for r in first.rows]
    assert not (other / "rank" / "standalone").exists()
    assert json.loads((other / "rank" / "summary.json").read_text())["standalone_dir"] == str(shared)


def test_the_search_pick_is_trained_beside_the_ranked_archs_and_kept_out_of_tau(search_run, monkeypatch, tmp_path):
    """best_arch.yaml (here a random search's best of 2 samples) is one more standalone job, its
    regret is measured against the best of all, and tau is that of the listed archs alone."""
    calls = counting(monkeypatch)
    chosen = Arch.from_yaml(search_run / "best_arch.yaml")
    others = [
        a
        for a in stratified_archs(load_supernet(search_run / "checkpoints" / "last.ckpt").space, 4, seed=5)
        if a != chosen
    ][:2]
    write_archs(tmp_path / "archs.yaml", others)
    shared = f"standalone_dir={tmp_path / 'standalone'}"
    cfg = rank_config(search_run, f"archs={tmp_path / 'archs.yaml'}", "search_pick=true", shared)
    outcome = rank_pipeline.rank(cfg)
    assert outcome.trained == 3 == len(calls) and [r.arch for r in outcome.rows] == others
    pick = outcome.search_pick
    assert pick.arch == chosen
    everyone = [*(r.standalone_mean for r in outcome.rows), pick.standalone_mean]
    assert pick.regret == pytest.approx(max(everyone) - pick.standalone_mean) and pick.regret >= 0
    alone = rank_pipeline.rank(rank_config(search_run, f"archs={tmp_path / 'archs.yaml'}", shared))
    assert alone.search_pick is None  # and tau is that of the listed archs either way:
    assert alone.summary.to_dict() == pytest.approx(outcome.summary.to_dict(), nan_ok=True)
    summary = json.loads((search_run / "rank" / "summary.json").read_text())
    assert "search_pick_regret" not in summary  # the last call ran without it

    write_archs(tmp_path / "with_pick.yaml", [*others, chosen])  # listed: ranked, and no extra job
    listed = rank_pipeline.rank(
        rank_config(search_run, f"archs={tmp_path / 'with_pick.yaml'}", "search_pick=true", shared)
    )
    assert listed.trained == 0 and len(listed.rows) == 3 and listed.search_pick.regret == pick.regret
    assert f"search's pick   regret {pick.regret:.4f}" in listed.text


def test_calibration_fine_tunes_each_arch_on_the_same_batches_before_it_is_scored(search_run, monkeypatch):
    counting(monkeypatch)
    plain = rank_pipeline.rank(rank_config(search_run, "archs=3"))
    calibrated = rank_pipeline.rank(rank_config(search_run, "archs=3", "calibrate.steps=3", "calibrate.lr=0.01"))
    assert calibrated.trained == 0  # the standalone side is the same jobs
    assert [r.arch for r in calibrated.rows] == [r.arch for r in plain.rows]
    assert [r.inherited_loss for r in calibrated.rows] != [r.inherited_loss for r in plain.rows]
    summary = json.loads((search_run / "rank" / "summary.json").read_text())
    assert summary["calibrate"] == {"steps": 3, "lr": 0.01, "gradient_clip_val": 1.0}
    assert "inherited: after 3 calibration steps at lr 0.01" in calibrated.text
    # the same steps on the same batches: scores repeat exactly
    again = rank_pipeline.rank(rank_config(search_run, "archs=3", "calibrate.steps=3", "calibrate.lr=0.01"))
    assert [r.inherited_loss for r in again.rows] == [r.inherited_loss for r in calibrated.rows]


def test_calibration_study_scores_a_ranked_run_without_training(search_run, monkeypatch, tmp_path):
    import runpy

    calls = counting(monkeypatch)
    rank_pipeline.rank(rank_config(search_run, "archs=3"))
    trained = len(calls)
    out = tmp_path / "calibration.json"
    script = Path(__file__).parents[1] / "scripts" / "studies" / "calibration_study.py"
    monkeypatch.setattr(sys, "path", [*sys.path])  # restored after the study puts the harness's folder on it
    saved = OmegaConf.load(search_run / ".hydra" / "config.yaml")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "calibration_study.py",
            f"--run={search_run}",
            "--steps",
            "0",
            "2",
            f"--data-dir={saved.paths.data_dir}",
            f"--out={out}",
        ],
    )
    runpy.run_path(str(script), run_name="__main__")
    report = json.loads(out.read_text())
    plain = read_ranking(search_run / "rank" / "ranking.csv", "acc")
    assert report["steps=0,lr=0.001"]["inherited"] == pytest.approx([r.inherited for r in plain])
    assert report["steps=2,lr=0.001"]["calibrate"]["steps"] == 2 and len(calls) == trained

    # a second standalone seed: the kept scores are judged again against the new means, unscored
    rank_pipeline.rank(rank_config(search_run, "archs=3", "seeds=[0,1]"))
    monkeypatch.setattr(rank_pipeline, "inherited_score", lambda *a, **k: pytest.fail("scored again"))
    runpy.run_path(str(script), run_name="__main__")
    again = json.loads(out.read_text())
    means = [r.standalone_mean for r in read_ranking(search_run / "rank" / "ranking.csv", "acc")]
    assert again["standalone"] == pytest.approx(means)
    kept = again["steps=2,lr=0.001"]
    assert kept["inherited"] == report["steps=2,lr=0.001"]["inherited"]
    assert kept["regret"] == pytest.approx(max(means) - means[kept["pick"]])


def test_calibration_lowers_the_training_loss_and_zero_steps_change_nothing(search_run):
    import torch

    from nas.metrics import task_loss
    from nas.training.calibrate import Calibration, calibrate

    saved = OmegaConf.load(search_run / ".hydra" / "config.yaml")
    supernet = load_supernet(search_run / "checkpoints" / "last.ckpt")
    task = build_task(OmegaConf.to_container(saved.task), saved.paths.data_dir, "test")
    arch = supernet.space.largest()
    batch = next(iter(task.train_dataloader()))

    def loss(model):
        with torch.no_grad():
            return task_loss(model.eval()(batch["tokens"], batch["mask"]), batch["target"]).item()

    inherited = supernet.extract(arch)
    before = {k: v.clone() for k, v in inherited.state_dict().items()}
    calibrate(inherited, task.train_dataloader, Calibration(steps=0))
    assert all(torch.equal(v, before[k]) for k, v in inherited.state_dict().items())
    tuned = calibrate(supernet.extract(arch), task.train_dataloader, Calibration(steps=20, lr=0.01))
    assert loss(tuned) < loss(inherited)
    with pytest.raises(ConfigError, match=r"^steps=-1: must be a whole number >= 0"):
        Calibration(steps=-1)


def test_a_supernet_trained_before_an_op_changed_is_named_on_load(search_run, tmp_path, caplog):
    """The search checkpoint records the revisions of every op of its space past their first; a
    record without linformer's (written before its revision 2) warns when the supernet loads,
    as nas-rank and retrain's init=inherit load it."""
    import torch

    ckpt = torch.load(search_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "linformer" in load_supernet(search_run / "checkpoints" / "last.ckpt").space.all_op_types()
    assert ckpt["supernet"]["op_revisions"] == {"linformer": 2}
    del ckpt["supernet"]["op_revisions"]
    torch.save(ckpt, tmp_path / "older.ckpt")
    with caplog.at_level("WARNING", logger="nas"):
        load_supernet(search_run / "checkpoints" / "last.ckpt")
        assert not caplog.records
        load_supernet(tmp_path / "older.ckpt")
    assert "older.ckpt was written by linformer revision 1 -> 2" in caplog.text


def test_claims_are_exclusive_and_a_dead_process_claim_is_taken_over(tmp_path):
    job = queue.Job({"arch": {"depth": 1}, "space": {}, "shape": {}}, {}, "", 0, queue.Budget(), {})
    assert queue.claim(tmp_path, job)
    assert not queue.claim(tmp_path, job)  # held by this (live) process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{job.id}.claim").write_text(f"{socket.gethostname()} {dead.pid}\n")
    assert queue.claim(tmp_path, job)  # its owner is gone: taken over
    claim = tmp_path / f"{job.id}.claim"
    claim.write_text(f"another-host.example {os.getpid()}\n")
    assert not queue.claim(tmp_path, job)  # another machine's, its heartbeat going: respected
    old = time.time() - queue.STALE_CLAIM_SECONDS - 5
    os.utime(claim, (old, old))
    assert queue.claim(tmp_path, job)  # its heartbeat stopped: the machine died, taken over
    claim.write_text(f"another-host.example {os.getpid()}\n")
    queue.release(tmp_path, job)
    assert queue.claim(tmp_path, job)


def test_a_training_process_keeps_its_claims_fresh_and_only_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(queue, "HEARTBEAT_SECONDS", 0.05)
    arch = {"depth": 1, "layers": [{"attention": "full", "heads": 1, "ffn_dim": 8}]}
    job = queue.Job({"arch": arch, "space": {}, "shape": {}}, {}, "", 0, queue.Budget(), {})
    long_ago = time.time() - 1000
    others = tmp_path / "another.claim"
    others.write_text(f"another-host.example {os.getpid()}\n")
    os.utime(others, (long_ago, long_ago))
    ages = []

    def slow_training(job, checkpoints=None):
        claim = tmp_path / f"{job.id}.claim"
        os.utime(claim, (long_ago, long_ago))
        time.sleep(0.5)  # ten heartbeats
        ages.append(time.time() - claim.stat().st_mtime)
        return {
            "arch": job.model["arch"],
            "seed": job.seed,
            "budget": job.budget.__dict__,
            "metric": "acc",
            "val": 0.5,
            "val_loss": 1.0,
            "train_seconds": 0.5,
        }  # read back and checked as a real result

    assert queue.run_jobs([job], tmp_path, train_fn=slow_training) == [job]
    assert ages[0] < 0.5 and others.stat().st_mtime == pytest.approx(long_ago, abs=1)


def largest_arch_job(search_run, epochs: int = 1) -> queue.Job:
    saved = OmegaConf.load(search_run / ".hydra" / "config.yaml")
    supernet = load_supernet(search_run / "checkpoints" / "last.ckpt")
    task = OmegaConf.to_container(saved.task, resolve=True)  # a record: name and options
    budget = queue.Budget(max_epochs=epochs, warmup_steps=2)
    spec = ModelSpec(supernet.space.largest(), supernet.space, supernet.shape)
    return queue.Job(spec.to_dict(), task, str(saved.paths.data_dir), 0, budget, {"accelerator": "cpu", "devices": 1})


def test_a_job_trains_the_same_twice_and_another_seed_differs(search_run):
    """A seed is a result: rerunning a job (after a lost file) reproduces it."""
    job = largest_arch_job(search_run)
    first, again = standalone.train(job), standalone.train(job)
    assert (first["val"], first["val_loss"]) == (again["val"], again["val_loss"])
    other = standalone.train(queue.Job(**{**job.__dict__, "seed": 1}))
    assert other["val_loss"] != first["val_loss"]


def test_a_job_killed_mid_training_resumes_at_its_last_epoch_and_ends_as_if_never_killed(
    search_run, tmp_path, monkeypatch
):
    job = largest_arch_job(search_run, epochs=2)
    uninterrupted = standalone.train(job)

    def killed_in_epoch_1(module):
        if module.current_epoch == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(RetrainModule, "on_train_epoch_start", killed_in_epoch_1, raising=False)
    with pytest.raises(RuntimeError, match="killed"):
        queue.run_jobs([job], tmp_path, standalone.train)
    assert (tmp_path / "in_progress" / f"{job.id}.ckpt").is_file() and queue.read_result(tmp_path, job) is None
    monkeypatch.undo()
    epochs = []
    monkeypatch.setattr(RetrainModule, "on_train_epoch_start", lambda m: epochs.append(m.current_epoch), raising=False)
    assert queue.run_jobs([job], tmp_path, standalone.train) == [job]
    assert epochs == [1]  # epoch 0 was not trained again
    resumed = queue.read_result(tmp_path, job)
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-5)
    assert resumed["val"] == uninterrupted["val"]
    assert not list((tmp_path / "in_progress").iterdir())  # the checkpoint goes with the result


def test_job_ids_name_what_determines_the_result():
    job = queue.Job(
        {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}},
        {"seq_len": 8},
        "/data",
        0,
        queue.Budget(),
        {"accelerator": "cpu"},
    )
    same_elsewhere = queue.Job(
        {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 8}, "/other", 0, queue.Budget(), {}
    )
    assert job.id == same_elsewhere.id  # where data is cached and on what it trains do not change it
    for other in (
        queue.Job(
            {"arch": {"depth": 2}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 8}, "", 0, queue.Budget(), {}
        ),
        queue.Job(
            {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 8}, "", 1, queue.Budget(), {}
        ),
        queue.Job(
            {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}},
            {"seq_len": 8},
            "",
            0,
            queue.Budget(max_epochs=3),
            {},
        ),
        queue.Job(
            {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 9}, "", 0, queue.Budget(), {}
        ),
        queue.Job(
            {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}},
            {"seq_len": 8},
            "",
            0,
            queue.Budget(),
            {},
            {"linformer": 2},
        ),
    ):
        assert other.id != job.id
    # Jobs without revised ops keep the id they had before revisions were recorded: a cached
    # result is retrained only where an op of its arch has changed since.
    assert job.id == "3efbf3bc7c54d3e5"  # as computed before revisions existed, and before ModelSpec
    other_shape = queue.Job(
        {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {"max_len": 8}},
        {"seq_len": 8},
        "",
        0,
        queue.Budget(),
        {},
    )
    assert other_shape.id == job.id  # the task decides the shape: it adds nothing to the key


def test_the_cli_prints_the_figures(search_run, capsys):
    outcome = rank_cli.run(rank_config(search_run, "archs=3"))
    printed = capsys.readouterr().out
    assert "Kendall tau-b" in printed and "regret" in printed and "supernet's pick" in printed
    assert f"{outcome.summary.regret:.4f}" in printed


@pytest.mark.slow  # two spawned processes import torch and Lightning: half a minute on 2 loaded cores
def test_two_worker_processes_train_every_job_once(search_run, tmp_path):
    folder = search_run / "rank" / "standalone"
    before = set(folder.glob("*.json")) if folder.exists() else set()
    cfg = rank_config(search_run, "archs=4", "workers=2", "seed=7")
    outcome = rank_pipeline.rank(cfg)
    new = set(folder.glob("*.json")) - before
    assert outcome.trained == len(new) >= 1
    pids = {json.loads(p.read_text())["pid"] for p in new}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # trained in the spawned workers
    assert rank_pipeline.rank(cfg).trained == 0


@pytest.mark.slow  # a real `nas-search` and `nas-rank` process
def test_nas_rank_end_to_end_as_a_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    common = [f"paths.runs={tmp_path / 'runs'}", f"paths.data_dir={tmp_path / 'data'}"]
    subprocess.run(
        [sys.executable, "-m", "nas.cli.search", *TINY, "strategy=random", "retrain.enabled=false", *common],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    run_dir = next((tmp_path / "runs" / "search").iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "nas.cli.rank", f"run={run_dir}", "archs=3", *TINY_RANK, *common],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "Kendall tau-b" in done.stdout and (run_dir / "rank" / "ranking.csv").is_file()


BAD = [
    (["archs=3"], "run: missing"),
    (["run={tmp}/nowhere", "archs=3"], "no such folder"),
    (["run={tmp}", "archs=3"], "no checkpoints/last.ckpt"),
    (["run={run}", "archs=1"], "at least 2 archs"),
    (["run={run}", "archs=0"], "at least 2 archs"),
    (["run={run}", "archs=true"], "expected a number of archs"),
    (["run={run}", "archs={tmp}/missing.yaml"], "missing.yaml: no such file"),
    (["run={run}", "archs=3", "seeds=[0,0]"], "seeds"),
    (["run={run}", "archs=3", "workers=0"], "workers=0"),
    (["run={run}", "archs=3", "budget.max_epochs=0"], "budget.max_epochs"),
    (["run={run}", "archs=3", "calibrate.steps=-5"], "calibrate.steps=-5"),
    (["run={run}", "archs=3", "calibrate.lr=fast"], "calibrate.lr"),
    (["run={run}", "archs=3", "budget.lr=abc"], "nas-rank: error: budget.lr='abc': must be a number"),
]


@pytest.mark.parametrize("overrides,words", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line(search_run, tmp_path, capsys, overrides, words):
    overrides = [o.replace("{tmp}", str(tmp_path)).replace("{run}", str(search_run)) for o in overrides]
    cfg = compose_config("rank", tmp_path / "cmd", [*TINY_RANK, *overrides])
    with pytest.raises(SystemExit) as exit_:
        rank_cli.run(cfg)
    assert exit_.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("nas-rank: error:") and words in err[0], err
