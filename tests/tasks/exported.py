"""A task's model trained one step, checkpointed as nas-retrain writes it, and exported with the
task's description, so that tests can run the folder's own predict.py on raw input."""

from pathlib import Path

import pytorch_lightning as pl
import torch

from nas.export import export
from nas.training.retrain import RetrainModule
from tests.helpers import module_from_file


def export_task_model(task, space: dict, layers: list[dict], folder: Path) -> tuple[Path, torch.nn.Module]:
    """(export folder, the trained model in eval mode) for an arch of `layers` in `space`,
    trained one step on the task's training batches."""
    torch.manual_seed(0)
    spec = {"arch": {"depth": len(layers), "layers": layers}, "space": space, "shape": task.shape.to_dict()}
    module = RetrainModule(spec, task.metric, warmup_steps=1, task_config=task.record())
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, task.train_dataloader(), task.val_dataloader(), weights_only=True)
    ckpt = folder / "retrain.ckpt"
    trainer.save_checkpoint(ckpt)
    export(ckpt, folder / "export", task=task.describe())
    return folder / "export", module.model.eval()


def folder_script(folder: Path):
    """The export folder's own predict.py, imported (its HERE is that folder)."""
    return module_from_file("exported_predict", folder / "predict.py")
