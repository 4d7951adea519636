"""The Lightning module that trains one standalone subnet: retraining after a search.

The subnet starts from scratch or from the supernet's weights (`Supernet.extract`), and can
learn from a teacher (the supernet's largest subnet) by distillation, as in TinyBERT
(https://arxiv.org/abs/1909.10351): loss = (1 - w) * task loss + w * soft cross-entropy.
The checkpoint holds everything needed to rebuild the model: its `ModelSpec` (the hparam
`model`), so export needs nothing else.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.metrics import COMPANIONS, check_finite, distillation_loss, task_loss, task_metric
from nas.model import ModelSpec, Subnet
from nas.ops.attention import revisions
from nas.safe_load import read_checkpoint


class RetrainModule(pl.LightningModule):
    """Args:
    model: the model to train: a ModelSpec, or its `to_dict()` as saved in hparams.
    metric: "acc", "bpb" or "mse" (a forecast's, which also logs its companion "mae").
    lr, weight_decay, warmup_steps: AdamW with linear warm-up then cosine decay.
    teacher: an optional module mapping (tokens, mask) to logits.
    distill: the weight of the distillation loss (needs a teacher).
    task_config: the task's record (`Task.record()`: its name and options), kept so that
        export can evaluate on its test set; read back through `nas.tasks.build_task`.
    op_revisions: ignored; the record a loaded checkpoint brings back (the hparams hold
        this code's `revisions` of the arch's ops, which export compares with its own).
    """

    def __init__(
        self,
        model: dict | ModelSpec,
        metric: str,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 50,
        teacher: nn.Module | None = None,
        distill: float = 0.0,
        task_config: dict | None = None,
        op_revisions: dict | None = None,
    ):
        super().__init__()
        spec = model if isinstance(model, ModelSpec) else ModelSpec.from_dict(model)
        self.save_hyperparameters(
            {
                "model": spec.to_dict(),
                "metric": metric,
                "lr": lr,
                "weight_decay": weight_decay,
                "warmup_steps": warmup_steps,
                "distill": distill,
                "task_config": task_config,
                "op_revisions": revisions(spec.space.op_types(spec.arch)),
            }
        )
        self.spec, self.metric = spec, metric
        self.model = Subnet(spec)
        if distill and teacher is None:
            raise ValueError("distill > 0 needs a teacher")
        # Not a submodule: the teacher stays out of the checkpoint and the optimizer.
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False) if teacher else None)

    def model_record(self) -> dict:
        """What a resume must build the same: the model (the checkpoint's hyper_parameters' `model`)."""
        return {"model": self.hparams["model"]}

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.model(tokens, mask)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        logits = self(batch["tokens"], batch["mask"])
        loss = task_loss(logits, batch["target"])
        if self.teacher is not None and self.hparams.distill:
            with torch.no_grad():
                teacher_logits = self.teacher(batch["tokens"], batch["mask"])
            soft = distillation_loss(logits, teacher_logits, batch["target"])
            loss = (1 - self.hparams.distill) * loss + self.hparams.distill * soft
        check_finite(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def _log_scores(self, batch: dict, stage: str) -> None:
        logits = self(batch["tokens"], batch["mask"])
        size = batch["tokens"].shape[0]
        # sync_dist: under DDP every rank must see the same mean, or EarlyStopping could stop
        # one rank and not the other
        self.log(f"{stage}/loss", task_loss(logits, batch["target"]), batch_size=size, sync_dist=True)
        for metric in (self.metric, *COMPANIONS.get(self.metric, ())):  # a forecast's mse, then its mae
            self.log(
                f"{stage}/{metric}",
                task_metric(logits, batch["target"], metric),
                prog_bar=metric == self.metric,
                batch_size=size,
                sync_dist=True,
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._log_scores(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._log_scores(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = min(self.hparams.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @classmethod
    def load_model(cls, path: str, map_location: str = "cpu") -> RetrainModule:
        """The module from a checkpoint, without a teacher (so without distillation). A
        checkpoint from before `ModelSpec` (separate arch, space and shape hparams) loads too."""
        ckpt = read_checkpoint(path, "retrain checkpoint")  # one line, not a traceback, for a bad file
        hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
        if not isinstance(hparams, dict):
            raise ConfigError(f"{path}: not a LongNAS retrain checkpoint (no 'hyper_parameters')")
        spec = ModelSpec.from_hparams(hparams, source=str(path))
        # Lightning passes only the arguments __init__ names, so old checkpoints' arch, space
        # and shape are dropped in favour of `model`
        return cls.load_from_checkpoint(
            path, map_location=map_location, weights_only=True, model=spec, teacher=None, distill=0.0
        )
