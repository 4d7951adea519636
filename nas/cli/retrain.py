"""`nas-retrain`: train one arch as a standalone model (from scratch or from the supernet's
weights, optionally distilling from the supernet's largest subnet) and report its test metric.

    nas-retrain arch=runs/search/<timestamp>/best_arch.yaml task=mqar
    nas-retrain arch=best_arch.yaml init=inherit supernet_ckpt=runs/search/<timestamp>/checkpoints/last.ckpt
"""
from __future__ import annotations

from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping

from nas.cli.common import CONFIGS, log, one_line_errors
from nas.errors import ConfigError
from nas.space import Arch, SearchSpace
from nas.supernet import Supernet
from nas.tasks import Task
from nas.training.checkpoint import AtomicCheckpoint, last_checkpoint
from nas.metrics import HIGHER_IS_BETTER
from nas.training.retrain import RetrainModule
from nas.training.search import load_supernet

INITS = ("scratch", "inherit")


def retrain(cfg: DictConfig, arch: Arch, space: SearchSpace, task: Task, out_dir: Path,
            supernet: Supernet | None = None, settings: DictConfig | None = None) -> dict:
    """Train `arch` on `task`; returns the best checkpoint and the validation and test metrics.

    `settings` are the retraining options (configs/retraining/default.yaml), `cfg.retrain` by
    default; a `supernet` in memory saves loading `settings.supernet_ckpt`.
    """
    s = settings if settings is not None else cfg.retrain
    if s.init not in INITS:
        raise ConfigError(f"unknown init '{s.init}'; allowed: {', '.join(INITS)}")
    space.validate(arch)
    if supernet is None and (s.init == "inherit" or s.distill):
        if not s.supernet_ckpt:
            raise ConfigError("init=inherit and distill need supernet_ckpt=<a search's checkpoints/last.ckpt>")
        supernet = load_supernet(s.supernet_ckpt, space)
    teacher = supernet.extract(space.largest()) if s.distill else None
    module = RetrainModule(arch, space, task.vocab_size, task.num_classes, task.seq_len, task.head,
                           task.metric, lr=s.lr, weight_decay=s.weight_decay, warmup_steps=s.warmup_steps,
                           teacher=teacher, distill=s.distill,
                           task_config=OmegaConf.to_container(cfg.task, resolve=True))
    if s.init == "inherit":
        module.model.load_state_dict(supernet.extract(arch).state_dict())

    monitor = f"val/{task.metric}"
    mode = "max" if HIGHER_IS_BETTER[task.metric] else "min"
    best = AtomicCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
                            save_top_k=1, enable_version_counter=False)
    logger = hydra.utils.instantiate(cfg.logger, save_dir=str(out_dir)) if cfg.get("logger") else False
    trainer_settings = {**OmegaConf.to_container(cfg.trainer, resolve=True),
                        "max_epochs": s.max_epochs, "gradient_clip_val": s.gradient_clip_val}
    trainer = pl.Trainer(**trainer_settings, logger=logger, default_root_dir=out_dir,
                         callbacks=[best, last_checkpoint(out_dir / "checkpoints"),
                                    EarlyStopping(monitor=monitor, mode=mode, patience=s.patience)])
    last = out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if cfg.get("resume") and last.is_file() else None
    if resume_from:
        log.info("resuming retraining from %s", resume_from)
    trainer.fit(module, datamodule=task, ckpt_path=resume_from)
    val = float(trainer.callback_metrics.get(monitor, float("nan")))
    tested = trainer.test(module, datamodule=task, ckpt_path=best.best_model_path or None, verbose=False)
    metrics = {f"retrain/val_{task.metric}": best.best_model_score.item() if best.best_model_score is not None else val,
               f"retrain/test_{task.metric}": tested[0][f"test/{task.metric}"],
               **{f"baseline/{k.replace('/', '_')}": v for k, v in task.baseline().items() if k.startswith("test/")}}
    return {"ckpt": Path(best.best_model_path or last), "metrics": metrics}


@one_line_errors("nas-retrain")
def run(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    task: Task = hydra.utils.instantiate(cfg.task, data_dir=cfg.paths.data_dir)
    space = SearchSpace.from_yaml(cfg.space.file)
    arch = Arch.from_yaml(cfg.arch)
    result = retrain(cfg, arch, space, task, run_dir, settings=cfg)
    lines = ["", arch.describe(), "", *(f"{k:<24} {v:.4f}" for k, v in result["metrics"].items()),
             f"{'checkpoint':<24} {result['ckpt']}"]
    print("\n".join(lines))
    return result


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="retrain")
def main(cfg: DictConfig) -> None:
    run(cfg)

