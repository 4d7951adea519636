"""`nas-search`: train a supernet under a strategy, choose an arch, then retrain and export it.

    nas-search                                     # the quickstart (see configs/search.yaml)
    nas-search task=listops space=lra strategy=gdas trainer.max_epochs=3
    nas-search resume=runs/search/2026-11-23_14-00-00   # continue an interrupted run
"""
from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from nas import cost
from nas.cli.common import CONFIGS, log, one_line_errors
from nas.space import Arch, SearchSpace
from nas.strategies import STRATEGIES, Candidate, SearchResult, Strategy
from nas.supernet import FewShotSupernet, Supernet
from nas.tasks import Task
from nas.training.checkpoint import last_checkpoint
from nas.training.evaluate import evaluate
from nas.training.run import run_search
from nas.training.tensorboard import log_hparams, log_search


def make_strategy(cfg: DictConfig, space: SearchSpace, task: Task, run_dir: Path) -> Strategy:
    """The configured strategy; it also gets the task's length and the storage if it takes them."""
    options = OmegaConf.to_container(cfg.strategy, resolve=True)
    cls = STRATEGIES.get(options.pop("name"))
    context = {"seq_len": task.seq_len, "storage": cfg.storage.url, "run_dir": str(run_dir)}
    accepted = inspect.signature(cls).parameters
    options.update({k: v for k, v in context.items() if k in accepted and k not in options})
    return cls(space, seed=cfg.seed, **options)


def make_trainer(cfg: DictConfig, run_dir: Path, checkpoint_dir: Path, **overrides) -> pl.Trainer:
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    checkpoint = last_checkpoint(checkpoint_dir)  # at most one epoch is lost to a kill
    settings = {**OmegaConf.to_container(cfg.trainer, resolve=True), **overrides}
    return pl.Trainer(**settings, logger=logger, callbacks=[checkpoint], default_root_dir=run_dir)


def write_results(run_dir: Path, result: SearchResult) -> None:
    result.best.to_yaml(run_dir / "best_arch.yaml")
    for name, rows in (("ranked", result.ranked), ("pareto", result.pareto)):
        if rows:
            write_candidates(run_dir / f"{name}.csv", rows)


def write_candidates(path: Path, rows: list[Candidate]) -> None:
    keys = sorted({k for row in rows for k in row.metrics})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", *keys, "arch"])
        for i, row in enumerate(rows):
            writer.writerow([i, *(row.metrics.get(k, "") for k in keys), json.dumps(row.arch.to_dict())])


def summary(arch: Arch, metrics: dict, files: dict[str, Path]) -> str:
    lines = ["", "Best architecture", "-----------------", arch.describe(), ""]
    lines += [f"{k:<22} {v:,.4g}" if isinstance(v, float) else f"{k:<22} {v:,}" for k, v in metrics.items()]
    lines += ["", *(f"{k:<22} {v}" for k, v in files.items())]
    return "\n".join(lines)


def search(cfg: DictConfig, run_dir: Path) -> dict:
    """The search stage; returns the chosen arch's metrics and where its files are."""
    pl.seed_everything(cfg.seed, workers=True)
    task: Task = hydra.utils.instantiate(cfg.task, data_dir=cfg.paths.data_dir)
    space = SearchSpace.from_yaml(cfg.space.file)
    supernet = Supernet(space, task.vocab_size, task.num_classes, task.seq_len, head=task.head,
                        sharing=cfg.sharing)
    if cfg.get("few_shot"):
        supernet = FewShotSupernet(supernet, cfg.few_shot)
    strategy = make_strategy(cfg, space, task, run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    last = checkpoint_dir / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if resume_from:
        log.info("resuming the search from %s", resume_from)
    trainer = make_trainer(cfg, run_dir, checkpoint_dir)
    module, result = run_search(supernet, strategy, task, task.metric, trainer, ckpt_path=resume_from,
                                eval_batches=cfg.search.eval_batches, lr=cfg.search.lr,
                                weight_decay=cfg.search.weight_decay, grad_clip=cfg.search.grad_clip)
    write_results(run_dir, result)

    val_batches = list(task.val_dataloader())[: cfg.search.eval_batches]
    shape = cost.ModelShape(task.vocab_size, task.num_classes, task.seq_len, task.head)
    estimate = cost.estimate(result.best, space, shape, task.seq_len)
    metrics = {f"search/val_{task.metric}": evaluate(supernet, result.best, val_batches, task.metric),
               "cost/params": estimate.params, "cost/flops": estimate.flops,
               "cost/activation_mib": round(estimate.activation_mib, 2)}
    if trainer.logger:
        log_to_tensorboard(trainer.logger.experiment, space, strategy, result, estimate, metrics, cfg,
                           step=trainer.global_step)
    return {"arch": result.best, "space": space, "task": task, "supernet": supernet,
            "supernet_ckpt": last, "metrics": metrics}


def log_to_tensorboard(writer, space, strategy, result, estimate, metrics, cfg, step: int) -> None:
    log_search(writer, space, strategy, result, estimate, metrics, step=step)
    hparams = {"task": cfg.task._target_.rsplit(".", 1)[-1], "space": space.name,
               "strategy": cfg.strategy.name, "sharing": cfg.sharing, "seed": cfg.seed}
    log_hparams(writer, hparams, {k: float(v) for k, v in metrics.items()}, step=step)
    writer.flush()


@one_line_errors("nas-search")
def run(cfg: DictConfig) -> dict:
    """Search, then (if enabled) retrain and export; prints a one-screen summary."""
    from nas.cli.export import export_run
    from nas.cli.retrain import retrain

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    found = search(cfg, run_dir)
    metrics = dict(found["metrics"])
    files = {"run folder": run_dir, "best arch": run_dir / "best_arch.yaml",
             "tensorboard": f"tensorboard --logdir {run_dir}"}
    if cfg.retrain.enabled:
        retrained = retrain(cfg, found["arch"], found["space"], found["task"], run_dir / "retrain",
                            supernet=found["supernet"])
        metrics.update(retrained["metrics"])
        files["retrained checkpoint"] = retrained["ckpt"]
        if cfg.export.enabled:
            exported = export_run(retrained["ckpt"], run_dir / "export", cfg.export, found["task"])
            files["export"] = exported["dir"]
    text = summary(found["arch"], metrics, files)
    (run_dir / "summary.txt").write_text(text + "\n")
    print(text)
    return {"arch": found["arch"], "metrics": metrics, "files": files}


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="search")
def main(cfg: DictConfig) -> None:
    run(cfg)
