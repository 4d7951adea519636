"""Standalone training of one arch, the ground truth `nas-rank` compares inherited-weight scores
against (Yu et al. 2020, https://arxiv.org/abs/1902.08142); `nas.jobs.engine` runs many as jobs.

A job trains one arch from scratch with one seed for a fixed budget, through the same
`RetrainModule` as retraining (no early stopping), then scores the final weights on the whole
validation set. With a checkpoint folder it keeps its last epoch in `<id>.ckpt`, so a killed job
resumes there (the shuffle is drawn from seed and epoch, so it sees the batches an
uninterrupted one would).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from pathlib import Path

import pytorch_lightning as pl

from nas.errors import ConfigError
from nas.jobs.job import Job
from nas.metrics import evaluate_with_loss
from nas.model import ModelSpec
from nas.tasks import build_task
from nas.training.checkpoint import last_checkpoint, resumable
from nas.training.retrain import RetrainModule

log = logging.getLogger("nas")


def train(job: Job, checkpoints: Path | None = None) -> dict:
    """Train the job's model from scratch for the budget; its final metric and loss on the whole
    validation set, in the process of its job (`nas.jobs.engine`). With `checkpoints`, the last
    epoch is kept there as `<id>.ckpt` and training resumes from it."""
    spec = ModelSpec.from_dict(job.model, f"standalone job {job.id}: model")
    task = build_task(job.task, job.data_dir, f"standalone job {job.id}: task")
    if spec.shape != task.shape:
        raise ConfigError(
            f"standalone job {job.id}: its model's shape {spec.shape.to_dict()} is not its "
            f"task's {task.shape.to_dict()}"
        )
    pl.seed_everything(job.seed, workers=True, verbose=False)
    b = job.budget
    module = RetrainModule(
        spec, task.metric, lr=b.lr, weight_decay=b.weight_decay, warmup_steps=b.warmup_steps, task_config=job.task
    )
    saver = [] if checkpoints is None else [last_checkpoint(checkpoints, job.id)]
    resume = None if checkpoints is None else resumable(Path(checkpoints) / f"{job.id}.ckpt")
    if resume is not None:
        log.info("standalone job %s resumes from %s", job.id, resume)
    trainer = pl.Trainer(
        **job.trainer,
        max_epochs=b.max_epochs,
        gradient_clip_val=b.gradient_clip_val or None,
        logger=False,
        enable_checkpointing=bool(saver),
        callbacks=saver,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=task, ckpt_path=resume, weights_only=True)
    seconds = time.perf_counter() - start
    val, val_loss = evaluate_with_loss(module.model, task.val_dataloader(), task.metric)
    return {
        "arch": job.model["arch"],
        "seed": job.seed,
        "budget": dataclasses.asdict(b),
        "op_revisions": job.op_revisions,
        "metric": task.metric,
        "val": val,
        "val_loss": val_loss,
        "train_seconds": round(seconds, 2),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
