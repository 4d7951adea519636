"""nas-rank on a tiny search run: the files it writes, resume after a kill, the standalone jobs
in this process and as local processes (nas.jobs.engine on submitit), and one-line errors for a
bad run folder or archs value."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nas import pipeline, rank_pipeline
from nas.cli import rank as rank_cli
from nas.errors import ConfigError
from nas.jobs.engine import JobsConfig, JobsFailed, run_jobs
from nas.jobs.job import Budget, Job, read_result
from nas.model import ModelSpec
from nas.ops.attention import revisions
from nas.proxies import at_initialisation
from nas.ranking import (
    Prediction,
    baseline,
    ensemble,
    read_ranking,
    seed_agreement,
    stratified_archs,
    top_tau,
    write_archs,
)
from nas.space import Arch
from nas.tasks import build_task
from nas.training import standalone
from nas.training.retrain import RetrainModule
from nas.training.search import load_supernet
from tests.cli.conftest import TINY, compose_config

# in this process (submitit's debug executor: counted); the search's own pick has a test of its own
TINY_RANK = ["budget.max_epochs=1", "budget.warmup_steps=2", "jobs.executor=debug", "search_pick=false"]
IN_THIS_PROCESS = JobsConfig(executor="debug")


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
    """Count standalone trainings (run in this process with jobs.executor=debug)."""
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
    assert len(results) == 3 and not list((out / "standalone" / "in_progress").glob("*"))
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


def largest_arch_job(search_run, epochs: int = 1) -> Job:
    saved = OmegaConf.load(search_run / ".hydra" / "config.yaml")
    supernet = load_supernet(search_run / "checkpoints" / "last.ckpt")
    task = OmegaConf.to_container(saved.task, resolve=True)  # a record: name and options
    budget = Budget(max_epochs=epochs, warmup_steps=2)
    spec = ModelSpec(supernet.space.largest(), supernet.space, supernet.shape)
    return Job(spec.to_dict(), task, str(saved.paths.data_dir), 0, budget, {"accelerator": "cpu", "devices": 1})


def test_a_job_trains_the_same_twice_and_another_seed_differs(search_run):
    """A seed is a result: rerunning a job (after a lost file) reproduces it."""
    job = largest_arch_job(search_run)
    first, again = standalone.train(job), standalone.train(job)
    assert (first["val"], first["val_loss"]) == (again["val"], again["val_loss"])
    other = standalone.train(Job(**{**job.__dict__, "seed": 1}))
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
    with pytest.raises(JobsFailed, match=f"1 of 1 standalone jobs failed, the first {job.id} .*RuntimeError: killed"):
        run_jobs([job], tmp_path, standalone.train, IN_THIS_PROCESS)
    assert (tmp_path / "in_progress" / f"{job.id}.ckpt").is_file() and read_result(tmp_path, job) is None
    monkeypatch.undo()
    epochs = []
    monkeypatch.setattr(RetrainModule, "on_train_epoch_start", lambda m: epochs.append(m.current_epoch), raising=False)
    assert run_jobs([job], tmp_path, standalone.train, IN_THIS_PROCESS).trained == [job]
    assert epochs == [1]  # epoch 0 was not trained again
    resumed = read_result(tmp_path, job)
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-5)
    assert resumed["val"] == uninterrupted["val"]
    assert not list((tmp_path / "in_progress").iterdir())  # the checkpoint goes with the result


def test_job_ids_name_what_determines_the_result():
    job = Job(
        {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}},
        {"seq_len": 8},
        "/data",
        0,
        Budget(),
        {"accelerator": "cpu"},
    )
    same_elsewhere = Job(
        {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 8}, "/other", 0, Budget(), {}
    )
    assert job.id == same_elsewhere.id  # where data is cached and on what it trains do not change it
    for other in (
        Job({"arch": {"depth": 2}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 8}, "", 0, Budget(), {}),
        Job({"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 8}, "", 1, Budget(), {}),
        Job(
            {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}},
            {"seq_len": 8},
            "",
            0,
            Budget(max_epochs=3),
            {},
        ),
        Job({"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}}, {"seq_len": 9}, "", 0, Budget(), {}),
        Job(
            {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {}},
            {"seq_len": 8},
            "",
            0,
            Budget(),
            {},
            {"linformer": 2},
        ),
    ):
        assert other.id != job.id
    # Jobs without revised ops keep the id they had before revisions were recorded: a cached
    # result is retrained only where an op of its arch has changed since.
    assert job.id == "3efbf3bc7c54d3e5"  # as computed before revisions existed, and before ModelSpec
    other_shape = Job(
        {"arch": {"depth": 1}, "space": {"name": "s"}, "shape": {"max_len": 8}},
        {"seq_len": 8},
        "",
        0,
        Budget(),
        {},
    )
    assert other_shape.id == job.id  # the task decides the shape: it adds nothing to the key


def test_the_cli_prints_the_figures(search_run, capsys):
    outcome = rank_cli.run(rank_config(search_run, "archs=3"))
    printed = capsys.readouterr().out
    assert "Kendall tau-b" in printed and "regret" in printed and "supernet's pick" in printed
    assert f"{outcome.summary.regret:.4f}" in printed


def tiny_search(run_dir: Path, *overrides: str) -> Path:
    cfg = compose_config(
        "search", run_dir, [*TINY, "strategy=random", "strategy.samples=2", "retrain.enabled=false", *overrides]
    )
    pipeline.run(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """Another tiny search of the same space and task, with another seed: its supernet scores differ."""
    return tiny_search(tmp_path_factory.mktemp("second") / "run", "seed=1")


def test_the_free_baselines_and_the_top_tau_are_printed_and_stored(search_run, monkeypatch):
    counting(monkeypatch)
    outcome = rank_pipeline.rank(rank_config(search_run, "archs=4", "top_tau=3"))
    summary = json.loads((outcome.dir / "summary.json").read_text())
    rows = read_ranking(outcome.dir / "ranking.csv", "acc")  # the proxies' scores are in it
    standalone = [r.standalone_mean for r in rows]
    assert list(summary["predictors"]) == ["supernet", "params", "flops", "synflow", "grad_norm"]
    assert summary["top_archs"] == 3
    expected = top_tau([r.inherited for r in rows], standalone, True, 3)
    assert summary["top_tau"] == pytest.approx(expected, nan_ok=True)
    own = {k: summary[k] for k in ("kendall_tau", "top_tau", "regret")}
    assert summary["predictors"]["supernet"] == pytest.approx(own, nan_ok=True)
    for name in ("params", "flops", "synflow", "grad_norm"):
        scores = [{**r.cost, **r.scores}[name] for r in rows]
        assert summary["predictors"][name] == pytest.approx(
            baseline(name, scores, standalone, True, 3).to_dict(), nan_ok=True
        )
    # each proxy at the initialisation of the first standalone seed, on the first training batch
    saved = OmegaConf.load(search_run / ".hydra" / "config.yaml")
    task = build_task(OmegaConf.to_container(saved.task), saved.paths.data_dir, "test")
    spec = ModelSpec(rows[0].arch, load_supernet(search_run / "checkpoints" / "last.ckpt").space, task.shape)
    assert rows[0].scores == at_initialisation(spec, next(iter(task.train_dataloader())), seed=0)

    assert "among the 3 best by standalone" in outcome.text
    for p in outcome.predictions:
        assert f"{p.name:<12}{p.kendall_tau:>7.3f}  {p.top_tau:>11.3f}  {p.regret:>7.4f}" in outcome.text
    supernet, *baselines = outcome.predictions
    wins = all(supernet.beats(b) for b in baselines)
    assert ("the supernet beats every free baseline on tau and on regret" in outcome.text) == wins
    assert ("the supernet does NOT beat " in outcome.text) == (not wins)


def test_a_supernet_that_does_not_beat_counting_parameters_is_told_so():
    nan = float("nan")
    baselines = [Prediction("flops", 0.1, 0.0, 0.4), Prediction("synflow", nan, nan, nan)]
    behind = [Prediction("supernet", 0.2, 0.0, 0.3), Prediction("params", 0.5, 0.3, 0.0), *baselines]
    lines = rank_pipeline.predictions_text(behind, 4)
    assert lines[0].startswith("predictor     tau-b   best-4 tau   regret")
    assert (
        lines[-1] == "the supernet does NOT beat params (its tau 0.500 against 0.200, its regret 0.0000 against 0.3000)"
    )
    ahead = [Prediction("ensemble", 0.6, 0.1, 0.0), Prediction("run0", 0.1, 0.1, 0.5), *behind[1:]]
    assert rank_pipeline.predictions_text(ahead, 4)[-1] == "the ensemble beats every free baseline on tau and on regret"


def test_an_ensemble_of_runs_ranks_by_their_standardised_scores(search_run, second_run, monkeypatch, tmp_path):
    calls = counting(monkeypatch)
    shared = f"standalone_dir={search_run / 'rank' / 'standalone'}"  # where the ensemble looks by default
    alone = [rank_pipeline.rank(rank_config(run, "archs=3", shared)) for run in (search_run, second_run)]
    trained = len(calls)
    cfg = compose_config("rank", tmp_path / "cmd", [f"run=[{search_run},{second_run}]", *TINY_RANK, "archs=3"])
    together = rank_pipeline.rank(cfg)
    assert len(calls) == trained and together.search_pick is None  # the same standalone jobs; no pick of one run
    assert together.dir == search_run / "rank" / "ensemble"
    per_run = [[r.inherited for r in outcome.rows] for outcome in alone]
    assert per_run[0] != per_run[1]  # two supernets that score differently
    assert [r.inherited for r in together.rows] == pytest.approx(ensemble(per_run))
    assert [[r.scores[f"run{i}"] for r in together.rows] for i in (0, 1)] == per_run
    standalone = [r.standalone_mean for r in together.rows]
    assert standalone == [r.standalone_mean for r in alone[0].rows]
    summary = json.loads((together.dir / "summary.json").read_text())
    assert list(summary["predictors"])[:3] == ["ensemble", "run0", "run1"]
    assert summary["runs"] == [str(search_run), str(second_run)]
    for i, outcome in enumerate(alone):  # each run's own figures, as nas-rank of it alone
        own = {k: outcome.summary.to_dict()[k] for k in ("kendall_tau", "top_tau", "regret")}
        assert summary["predictors"][f"run{i}"] == pytest.approx(own, nan_ok=True)
    from scipy import stats

    tau = stats.kendalltau(ensemble(per_run), standalone).statistic
    assert summary["kendall_tau"] == pytest.approx(tau, nan_ok=True)
    assert "ensemble: the mean of the 2 runs' standardised inherited scores" in together.text
    assert read_ranking(together.dir / "ranking.csv", "acc")[0].scores.keys() >= {"run0", "run1", "synflow"}


def test_an_ensemble_refuses_runs_of_another_space_or_task(search_run, tmp_path_factory, tmp_path, capsys):
    other_space = tiny_search(tmp_path_factory.mktemp("tiny_space") / "run", "space=tiny")
    other_task = tmp_path / "other_task"
    shutil.copytree(search_run, other_task, ignore=shutil.ignore_patterns("rank"))
    saved = OmegaConf.load(other_task / ".hydra" / "config.yaml")
    saved.task.num_val = 32
    OmegaConf.save(saved, other_task / ".hydra" / "config.yaml")
    for other, words in (
        (other_space, f"run={other_space}: its supernet's space (tiny) is not that of {search_run} (quickstart)"),
        (other_task, f"run={other_task}: its task differs from that of {search_run} (in num_val)"),
    ):
        cfg = compose_config("rank", tmp_path / "cmd", [f"run=[{search_run},{other}]", *TINY_RANK, "archs=3"])
        with pytest.raises(SystemExit):
            rank_cli.run(cfg)
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and words in err[0], err


@pytest.mark.slow  # two local processes import torch and Lightning: half a minute on 2 loaded cores
def test_two_local_processes_train_every_job_once(search_run, tmp_path):
    folder = search_run / "rank" / "standalone"
    before = set(folder.glob("*.json")) if folder.exists() else set()
    cfg = rank_config(search_run, "archs=4", "jobs.executor=local", "workers=2", "seed=7")
    outcome = rank_pipeline.rank(cfg)
    new = set(folder.glob("*.json")) - before
    assert outcome.trained == len(new) >= 1
    pids = {json.loads(p.read_text())["pid"] for p in new}
    assert os.getpid() not in pids and len(pids) == len(new)  # each trained in a process of its own
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
    (["run=[{run},{run}]", "archs=3"], "expected one search run folder or a list of distinct ones"),
    (["run=[]", "archs=3"], "expected one search run folder or a list of distinct ones"),
    (["run={run}", "archs=3", "top_tau=1"], "top_tau=1: expected a fraction of the archs in (0, 1)"),
    (["run={run}", "archs=0"], "at least 2 archs"),
    (["run={run}", "archs=true"], "expected a number of archs"),
    (["run={run}", "archs={tmp}/missing.yaml"], "missing.yaml: no such file"),
    (["run={run}", "archs=3", "seeds=[0,0]"], "seeds"),
    (["run={run}", "archs=3", "workers=0"], "workers=0"),
    (["run={run}", "archs=3", "jobs.executor=local", "workers=99999"], "workers=99999: must be a whole number from 1"),
    (["run={run}", "archs=3", "jobs.executor=ray"], "jobs.executor='ray': allowed: local, slurm, debug"),
    (["run={run}", "archs=3", "jobs.executor=slurm"], "jobs.executor=slurm: no SLURM here"),
    (["run={run}", "archs=3", "jobs.slurm.time_minutes=0"], "jobs.slurm.time_minutes=0"),
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
