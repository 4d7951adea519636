"""The LongNAS recipe: search a supernet, retrain the chosen arch, export it.

    outcome = search(cfg, run_dir)                      # supernet training + the strategy's choice
    retrained = retrain(cfg, outcome.arch, outcome.space, outcome.task, run_dir / "retrain",
                        supernet=outcome.supernet)      # a standalone model of that arch
    exported = export(retrained.ckpt, run_dir / "export", cfg.export, outcome.task)
    # `run(cfg, run_dir)` does the three in order, as `nas-search` configures them.

Every stage takes a composed Hydra config (configs/search.yaml, retrain.yaml, export.yaml) and
returns a dataclass; the CLIs in `nas/cli/` only parse and print, and scripts call these.
`nas-rank`'s recipe (how faithfully a search's supernet ranks archs) is `nas.rank_pipeline`.
Weight sharing and the search follow the one-shot recipe of ENAS / DARTS / SPOS
(https://arxiv.org/abs/1904.00420); the rest is plumbing.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pytorch_lightning as pl
import yaml
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.tensorboard import SummaryWriter

from nas import cost
from nas.atomic import atomic_path, atomic_write
from nas.errors import ConfigError
from nas.evidence import Separation, confidence
from nas.export import export as export_folder
from nas.metrics import COMPANIONS, HIGHER_IS_BETTER, evaluate
from nas.model import ModelSpec
from nas.results import Candidate, SearchResult
from nas.run_folder import is_rank_zero as _rank_zero
from nas.run_folder import working_in
from nas.safe_load import read_checkpoint
from nas.space import Arch, SearchSpace
from nas.strategies import STRATEGIES, SearchReport, SearchSetting, Strategy, build_strategy
from nas.supernet import FewShotSupernet, Supernet
from nas.tasks import Task, build_task
from nas.training.checkpoint import AtomicCheckpoint, check_resume, last_checkpoint, resumable
from nas.training.retrain import RetrainModule
from nas.training.run import fit_supernet, validation_batches
from nas.training.search import SearchModule, load_supernet
from nas.training.tensorboard import log_hparams, log_search

log = logging.getLogger("nas")

INITS = ("scratch", "inherit")  # retraining starts from random weights or the supernet's


@dataclass(frozen=True)
class SearchOutcome:
    """A finished search."""

    arch: Arch  # the chosen arch (also in run_dir/best_arch.yaml)
    space: SearchSpace  # the space searched
    task: Task  # the task, set up (its validation batches were used)
    supernet: Supernet | FewShotSupernet  # the trained shared weights
    result: SearchResult  # the strategy's answer: best, ranked, pareto
    supernet_ckpt: Path  # the search's last checkpoint (retraining's init=inherit reads it)
    metrics: dict[str, float]  # search/val/<metric> of the chosen arch and its cost/...
    margins: dict[str, float] = field(default_factory=dict)  # per decision: winner minus runner-up
    comparison: dict[str, dict] = field(default_factory=dict)  # strategy.decide's scores per decision
    evidence: tuple[Separation, ...] = ()  # per decision of the final comparison, winner vs runner-up tested
    confidence: str = ""  # the one line on how sure the pick is (nas.evidence.confidence)
    tensorboard: SummaryWriter | None = None  # the search's event writer (None without a logger)
    step: int = 0  # the search's last global step, where its final entries are filed


@dataclass(frozen=True)
class RetrainOutcome:
    """A retrained arch."""

    arch: Arch  # the arch that was trained
    ckpt: Path  # the best checkpoint (by the validation metric), or the last one
    metrics: dict[str, float]  # retrain/val/<metric>, retrain/test/<metric>, baseline/test/...


@dataclass(frozen=True)
class ExportOutcome:
    """An export folder."""

    dir: Path  # the folder written
    metrics: dict  # what metrics.json holds


@dataclass(frozen=True)
class RunOutcome:
    """The whole recipe: a search, then (if enabled) retraining and export."""

    search: SearchOutcome
    retrain: RetrainOutcome | None  # None with retrain.enabled=false
    export: ExportOutcome | None  # None with export.enabled=false (or no retraining)
    metrics: dict[str, float] = field(default_factory=dict)  # every stage's metrics
    files: dict[str, str] = field(default_factory=dict)  # what was written where, for people
    summary: str = ""  # the one-screen text also written to summary.txt


# -- search ---------------------------------------------------------------------------------
def make_task(cfg: DictConfig) -> Task:
    """The configured task (`task.name` and its options), with its data under `paths.data_dir`."""
    return build_task(OmegaConf.to_container(cfg.task, resolve=True), cfg.paths.data_dir, "task")


def space_of(cfg: DictConfig) -> SearchSpace:
    """The space of `space.file`, its memory section replaced by `space.memory` when set."""
    memory = cfg.space.get("memory")
    return SearchSpace.from_yaml(
        cfg.space.file, OmegaConf.to_container(memory) if isinstance(memory, DictConfig) else memory
    )


def make_strategy(cfg: DictConfig, space: SearchSpace, task: Task, run_dir: Path) -> Strategy:
    """The configured strategy (`strategy.name` and its options), given what the search supplies:
    the task's length, the storage and the run folder. Its options are checked here, before any
    training (`build_strategy`)."""
    options = OmegaConf.to_container(cfg.strategy, resolve=True)
    setting = SearchSetting(seq_len=task.seq_len, storage=cfg.storage.url, run_dir=str(run_dir))
    return build_strategy(STRATEGIES.get(options.pop("name")), space, options, setting, seed=cfg.seed)


def _trainer(cfg: DictConfig, run_dir: Path, callbacks: list, logger, batches: int, **overrides) -> pl.Trainer:
    """The configured Trainer; `batches` is one epoch's training batches (all ranks together)."""
    settings = {**OmegaConf.to_container(cfg.trainer, resolve=True), **overrides}
    # log at least once per epoch: an epoch shorter than the interval would log no training
    # step (and Lightning warns); under DDP each rank steps through its share of the batches
    devices, nodes = settings.get("devices", 1), settings.get("num_nodes", 1)
    ranks = devices * nodes if isinstance(devices, int) and isinstance(nodes, int) else 1
    per_rank = max(1, -(-batches // ranks))
    settings["log_every_n_steps"] = max(1, min(settings.get("log_every_n_steps", 50), per_rank))
    try:
        return pl.Trainer(**settings, logger=logger, callbacks=callbacks, default_root_dir=run_dir)
    except (ValueError, TypeError) as err:  # Lightning's own message names the value and the choices
        raise ConfigError(f"trainer: {err}") from None


def search(cfg: DictConfig, run_dir: Path) -> SearchOutcome:
    """Train a supernet under the configured strategy and take its choice.

    Writes `best_arch.yaml`, `ranked.csv` / `pareto.csv` (strategies that rank), the last
    checkpoint and the TensorBoard views into `run_dir`; resumes from `run_dir` with
    `cfg.resume`. The chosen arch is evaluated once, on the same `search.eval_batches`
    validation batches the strategy compared candidates on.
    """
    run_dir = Path(run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in .hydra/config.yaml
    task = make_task(cfg)
    space = space_of(cfg)
    supernet = Supernet(space, task.shape, sharing=cfg.sharing)
    if cfg.get("few_shot_from") and not cfg.get("few_shot"):
        raise ConfigError("few_shot_from= needs few_shot=<decision> to split on")
    if cfg.get("few_shot"):
        parent = one_shot_parent(cfg.few_shot_from, supernet) if cfg.get("few_shot_from") else supernet
        supernet = FewShotSupernet(parent, cfg.few_shot)
    check_storage(run_dir / "optuna.db")
    strategy = make_strategy(cfg, space, task, run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
    resume_from = resume_point(cfg, last, "search", lambda: SearchModule(supernet, strategy, task.metric))
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    task.setup("fit")  # a search epoch cycles the longer of the training and validation loaders
    batches = max(len(task.train_dataloader()), len(task.val_dataloader()))
    trainer = _trainer(
        cfg, run_dir, [last_checkpoint(checkpoint_dir)], logger, batches
    )  # a kill loses one epoch at most
    module = fit_supernet(
        supernet,
        strategy,
        task,
        task.metric,
        trainer,
        ckpt_path=resume_from,
        lr=cfg.search.lr,
        weight_decay=cfg.search.weight_decay,
        grad_clip=cfg.search.grad_clip,
    )
    val_batches = validation_batches(task, cfg.search.eval_batches)  # built once, used twice
    result = module.choose(val_batches)  # on rank 0, shared by every rank under DDP
    if _rank_zero():
        write_results(run_dir, result)

    estimate = cost.estimate(ModelSpec(result.best, space, task.shape), task.seq_len)
    metrics = chosen_metrics(result, supernet, val_batches, task, estimate)
    report = strategy.report()
    verdict = confidence_line(report, metrics, task)
    if _rank_zero():
        write_margins(run_dir, report, verdict)
    writer = trainer.logger.experiment if trainer.logger and _rank_zero() else None  # rank 0's events only
    if writer is not None:
        log_search(
            writer,
            space,
            strategy,
            result,
            estimate,
            metrics,
            step=trainer.global_step,
            cost_of=lambda arch: cost.estimate(ModelSpec(arch, space, task.shape), task.seq_len),
            confidence=verdict,
        )
    return SearchOutcome(
        arch=result.best,
        space=space,
        task=task,
        supernet=supernet,
        result=result,
        supernet_ckpt=last,
        metrics=metrics,
        margins=report.margins,
        comparison=report.comparisons,
        evidence=report.evidence,
        confidence=verdict,
        tensorboard=writer,
        step=trainer.global_step,
    )


def chosen_metrics(
    result: SearchResult, supernet: Supernet | FewShotSupernet, val_batches: list[dict], task: Task, estimate: cost.Cost
) -> dict[str, float]:
    """search/val/<metric> of the chosen arch (the strategy's own score when it ranked it, else
    evaluated on `val_batches`) and its cost."""
    key = f"val/{task.metric}"
    scored = next((c.metrics[key] for c in result.ranked if c.arch == result.best and key in c.metrics), None)
    value = scored if scored is not None else evaluate(supernet, val_batches, task.metric, arch=result.best)
    return {
        f"search/{key}": value,
        "cost/params": estimate.params,
        "cost/flops": estimate.flops,
        "cost/activation_mib": round(estimate.activation_mib, 2),
    }


def confidence_line(report: SearchReport, metrics: dict[str, float], task: Task) -> str:
    """How sure the pick is (`nas.evidence.confidence`): its decisions' paired tests, and the
    search metric against the task's input-blind baseline (`Task.baseline` on validation)."""
    key = f"search/val/{task.metric}"
    baseline = task.baseline().get(f"val/{task.metric}")
    return confidence(report.evidence, key, metrics[key], baseline, HIGHER_IS_BETTER[task.metric])


def write_margins(run_dir: Path, report: SearchReport, verdict: str = "") -> None:
    """margins.yaml: per decision the final winner minus runner-up, how shrinking decided, the
    decide rule's comparisons, each decision's paired test (`evidence`) and the confidence line;
    a warning when a margin is below the strategy's threshold."""
    if not report.margins and not report.evidence:
        return
    sidecar: dict = {k: round(v, 4) for k, v in report.margins.items()}
    if report.shrunk:  # how each drop was decided (the last one's `cut` is the margin of the pick)
        sidecar["shrink"] = [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()} for e in report.shrunk
        ]
    if report.comparisons:
        sidecar["decide"] = report.comparisons
    if report.evidence:
        sidecar["evidence"] = [s.to_dict() for s in report.evidence]
    if verdict:
        sidecar["confidence"] = verdict
    atomic_write(Path(run_dir) / "margins.yaml", yaml.safe_dump(sidecar, sort_keys=False))
    if not report.margins:
        return
    decision, smallest = min(report.margins.items(), key=lambda kv: kv[1])
    if report.min_margin is not None and smallest < report.min_margin:
        log.warning(
            "the search did not decide: margin %.3f on %s < strategy.decide.min_margin %.3f",
            smallest,
            decision,
            report.min_margin,
        )


def resume_point(cfg: DictConfig, last: Path, stage: str, build: Callable[[], pl.LightningModule]) -> str | None:
    """With `resume=`, the checkpoint a search or retraining continues from: `last`, the one
    before it when `last` is damaged, or None (the run starts over). It is checked before any
    training: one line for a bad file or one of another command, space, strategy or arch, not a
    state_dict RuntimeError in fit (`check_resume`).

    Args:
        stage: "search" or "retrain".
        build: this run's LightningModule, built as its settings say (called only to check).
    """
    found = resumable(last) if cfg.get("resume") else None
    if found is None:
        return None
    log.info("resuming %s from %s", "the search" if stage == "search" else "retraining", found)
    module = build()
    check_resume(read_checkpoint(found, "resume checkpoint"), found, module, stage, module.model_record())
    return str(found)


def one_shot_parent(source: str | Path, fresh: Supernet) -> Supernet:
    """The trained one-shot supernet of a search run (its folder or a checkpoint) that a few-shot
    search's sub-supernets start from, as Zhao et al. do; it must match `fresh` (space, task
    shape, sharing), the supernet this search would build."""
    source = Path(source)
    ckpt = (
        resumable(source / "checkpoints" / "last.ckpt") or source / "checkpoints" / "last.ckpt"
        if source.is_dir()
        else source
    )
    if not ckpt.is_file():
        raise ConfigError(f"few_shot_from={source}: no search checkpoint there (expected a run folder or a .ckpt)")
    parent = load_supernet(ckpt, fresh.space)
    if isinstance(parent, FewShotSupernet):
        raise ConfigError(f"few_shot_from={source}: a few-shot supernet; give a one-shot search run")
    if parent.shape != fresh.shape or parent.sharing != fresh.sharing:
        raise ConfigError(
            f"few_shot_from={source}: trained for shape {parent.shape} with sharing={parent.sharing}, "
            f"this search has {fresh.shape} with sharing={fresh.sharing}"
        )
    return parent


def check_storage(path: Path) -> None:
    """A damaged Optuna SQLite file stops the run with one line, before any training, instead
    of SQLAlchemy's traceback at the first trial.

    The file is opened for writing, as Optuna opens it: a hot journal, left by a process killed
    in the middle of a write, is then rolled back as SQLite recovers any database, where a
    read-only check could only report it as damage. An empty file is what a kill before SQLite's
    first commit leaves (SQLite creates the file on opening it): it holds no trial, so the study
    starts over and loses nothing."""
    if not path.is_file():
        return
    try:  # the timeout waits out another worker's write instead of calling the lock damage
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as err:
        verdict = str(err)
    if verdict != "ok":
        raise ConfigError(
            f"{path} is damaged ({verdict}); move it away to start the study over "
            "(its trials are lost; a finished search also wrote them to ranked.csv)"
        )
    if path.stat().st_size == 0:
        log.warning("%s is empty (a kill before its first write): it holds no trial; the study starts over", path)


def write_results(run_dir: Path, result: SearchResult) -> None:
    """best_arch.yaml, and ranked.csv / pareto.csv when the strategy filled them."""
    result.best.to_yaml(Path(run_dir) / "best_arch.yaml")
    for name, rows in (("ranked", result.ranked), ("pareto", result.pareto)):
        if rows:
            write_candidates(Path(run_dir) / f"{name}.csv", rows)


def write_candidates(path: Path, rows: list[Candidate]) -> None:
    """One row per candidate, in order: its rank, its metrics, its arch as JSON."""
    keys = sorted({k for row in rows for k in row.metrics})
    with atomic_path(path) as partial, open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", *keys, "arch"])
        for i, row in enumerate(rows):
            writer.writerow([i, *(row.metrics.get(k, "") for k in keys), json.dumps(row.arch.to_dict())])


# -- retrain --------------------------------------------------------------------------------
def retrain(
    cfg: DictConfig,
    arch: Arch,
    space: SearchSpace,
    task: Task,
    out_dir: Path,
    settings: DictConfig | None = None,
    supernet: Supernet | None = None,
) -> RetrainOutcome:
    """Train `arch` on `task` as a standalone model; test its best checkpoint.

    Args:
        cfg: gives `trainer`, `logger`, `task` (kept in the checkpoint for export) and `resume`.
        arch, space: what to train.
        task: the data.
        out_dir: checkpoints/ and tensorboard/ go here.
        settings: the retraining options (configs/retraining/default.yaml); `cfg.retrain`
            by default.
        supernet: the search's supernet in memory, which saves loading `settings.supernet_ckpt`
            for init=inherit and distillation.
    """
    out_dir = Path(out_dir)
    s = settings if settings is not None else cfg.retrain
    if s.init not in INITS:
        raise ConfigError(f"retrain.init: unknown init '{s.init}'; allowed: {', '.join(INITS)}")
    spec = ModelSpec.build(arch, space, task.shape, "the arch to retrain")
    cost.check_size(spec, "the arch to retrain")  # before any allocation
    if supernet is None and (s.init == "inherit" or s.distill):
        if not s.supernet_ckpt:
            raise ConfigError("retrain.supernet_ckpt: init=inherit and distill need a search's checkpoints/last.ckpt")
        supernet = load_supernet(s.supernet_ckpt, space)
    teacher = supernet.extract(space.largest()) if s.distill else None
    module = RetrainModule(
        spec,
        task.metric,
        lr=s.lr,
        weight_decay=s.weight_decay,
        warmup_steps=s.warmup_steps,
        teacher=teacher,
        distill=s.distill,
        task_config=task.record(),
    )
    if s.init == "inherit":
        module.model.load_state_dict(supernet.extract(arch).state_dict())
    last = out_dir / "checkpoints" / "last.ckpt"
    resume_from = resume_point(cfg, last, "retrain", lambda: module)

    monitor = f"val/{task.metric}"
    mode = "max" if HIGHER_IS_BETTER[task.metric] else "min"
    best = AtomicCheckpoint(
        dirpath=out_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
    )
    logger = hydra.utils.instantiate(cfg.logger, save_dir=str(out_dir)) if cfg.get("logger") else False
    callbacks = [
        best,
        last_checkpoint(out_dir / "checkpoints"),
        EarlyStopping(monitor=monitor, mode=mode, patience=s.patience),
    ]
    task.setup("fit")
    trainer = _trainer(
        cfg,
        out_dir,
        callbacks,
        logger,
        len(task.train_dataloader()),
        max_epochs=s.max_epochs,
        gradient_clip_val=s.gradient_clip_val,
    )
    trainer.fit(module, datamodule=task, ckpt_path=resume_from, weights_only=True)
    val = float(trainer.callback_metrics.get(monitor, float("nan")))
    tested = trainer.test(
        module, datamodule=task, ckpt_path=best.best_model_path or None, verbose=False, weights_only=True
    )
    metrics = {
        f"retrain/val/{task.metric}": best.best_model_score.item() if best.best_model_score is not None else val,
        **{f"retrain/test/{m}": tested[0][f"test/{m}"] for m in (task.metric, *COMPANIONS.get(task.metric, ()))},
        # every baseline's test scores; a forecast's name theirs: baseline/linear/test/mse, ...
        **{f"baseline/{k}": v for k, v in task.baseline().items() if k.split("/")[-2] == "test"},
    }
    return RetrainOutcome(arch=arch, ckpt=Path(best.best_model_path or last), metrics=metrics)


# -- export ---------------------------------------------------------------------------------
def task_of(ckpt: Path, data_dir: str | Path) -> Task | None:
    """The task a retrain checkpoint was trained on (its hparams' record), to test the export."""
    hparams = read_checkpoint(ckpt, "ckpt").get("hyper_parameters")
    record = hparams.get("task_config") if isinstance(hparams, dict) else None
    return build_task(record, data_dir, f"ckpt {ckpt}: hyper_parameters.task_config") if record else None


def export(ckpt: Path, out: Path, settings: DictConfig, task: Task | None) -> ExportOutcome:
    """Write the export folder of a retrain checkpoint, measured on `task`'s test set if given.

    Args:
        settings: `overwrite` and `quantize` (configs/exporting/default.yaml).
    """
    batches = task.test_dataloader() if task is not None else None
    metrics = export_folder(
        ckpt,
        out,
        overwrite=settings.overwrite,
        quantize=settings.quantize,
        eval_batches=batches,
        seq_len=task.seq_len if task is not None else None,
        task=task.describe() if task is not None else None,
    )
    return ExportOutcome(dir=Path(out), metrics=metrics)


# -- the whole recipe -----------------------------------------------------------------------
def run(cfg: DictConfig, run_dir: Path) -> RunOutcome:
    """Search, then (with `retrain.enabled`) retrain, then (with `export.enabled`) export;
    writes summary.txt into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run folder: %s", run_dir)
    # evolution workers share one run's study by design (README): only they may work together
    shared = cfg.strategy.get("name") == "evolution" and bool(cfg.get("resume"))
    with working_in(run_dir, lock=not shared, resumed=bool(cfg.get("resume"))):
        return _run(cfg, run_dir)


def _run(cfg: DictConfig, run_dir: Path) -> RunOutcome:
    found = search(cfg, run_dir)
    metrics = dict(found.metrics)
    files = {
        "run folder": str(run_dir),
        "best arch": str(run_dir / "best_arch.yaml"),
        "tensorboard": f"tensorboard --logdir {run_dir}",
    }
    retrained = exported = None
    if cfg.retrain.enabled:
        retrained = retrain(cfg, found.arch, found.space, found.task, run_dir / "retrain", supernet=found.supernet)
        metrics.update(retrained.metrics)
        files["retrained checkpoint"] = str(retrained.ckpt)
        if cfg.export.enabled and _rank_zero():
            exported = export(retrained.ckpt, run_dir / "export", cfg.export, found.task)
            files["export"] = str(exported.dir)
    if found.tensorboard is not None:  # one HParams entry: settings, search, cost and test metrics
        hparams = {
            "task": found.task.name,
            "space": found.space.name,
            "sharing": cfg.sharing,
            "seed": cfg.seed,
            "strategy": OmegaConf.to_container(cfg.strategy, resolve=True),
        }
        log_hparams(found.tensorboard, hparams, metrics, step=found.step)
    text = summary(found.arch, metrics, files, found.margins, found.comparison, found.evidence, found.confidence)
    if _rank_zero():  # under DDP the other ranks write nothing
        atomic_write(run_dir / "summary.txt", text + "\n")
    return RunOutcome(search=found, retrain=retrained, export=exported, metrics=metrics, files=files, summary=text)


def summary(
    arch: Arch,
    metrics: dict,
    files: dict[str, str],
    margins: dict[str, float] | None = None,
    comparison: dict[str, dict] | None = None,
    evidence: tuple[Separation, ...] = (),
    verdict: str = "",
) -> str:
    """The chosen arch, its metrics, how decisively it won (margins, comparisons, each decision's
    paired test and the confidence line) and the files, as one screen of text."""
    lines = ["", "Best architecture", "-----------------", arch.describe(), ""]
    if margins:
        closest = sorted(margins.items(), key=lambda kv: kv[1])[:3]
        lines += [
            "margin to the runner-up (probability), closest decisions: "
            + ", ".join(f"{k} {v:.3f}" for k, v in closest),
            "",
        ]
    if comparison:  # strategy.decide (greedy, top2): the supernet's scores of the candidates
        lines += ["candidates compared on the validation batches (supernet weights):"]
        for key, c in comparison.items():
            tried = "; ".join(
                f"{t['choice']} " + ", ".join(f"{m} {v:.4g}" for m, v in t.items() if m != "choice") for t in c["tried"]
            )
            lines += [f"  {key}: {tried} -> {c['kept']}"]
        lines += [""]
    if evidence:
        lines += [f"winner against runner-up on the same {evidence[0].items} validation items (paired test):"]
        lines += [f"  {s.describe()}" for s in evidence]
    if verdict:
        lines += [verdict]
    if evidence or verdict:
        lines += [""]
    width = max([24, *map(len, metrics), *map(len, files)])  # a forecast's baseline/last_value/test/mse is longer
    lines += [f"{k:<{width}} {v:,.4g}" if isinstance(v, float) else f"{k:<{width}} {v:,}" for k, v in metrics.items()]
    lines += ["", *(f"{k:<{width}} {v}" for k, v in files.items())]
    return "\n".join(lines)
