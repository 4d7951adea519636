"""One standalone training of `nas-rank` as plain data (`Job`, with its `Budget`), and its
result: one JSON file named by a hash of everything that determines it (arch, seed, budget,
task), written atomically, so that a finished job is never trained again, whatever killed the
run. What a job trains is `nas.training.standalone.train`'s business; `engine.py` runs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from nas.atomic import atomic_write
from nas.errors import ConfigError, check_number, check_whole
from nas.metrics import METRICS
from nas.safe_load import read_json


@dataclass(frozen=True)
class Budget:
    """One equal training budget for every arch (no early stopping)."""

    max_epochs: int = 8  # epochs over the task's training set
    lr: float = 3.0e-3  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 0 at the end of the budget
    gradient_clip_val: float = 1.0  # gradient norm clip (0: off)

    def __post_init__(self):
        check_whole(self.max_epochs, "max_epochs", 1)
        check_whole(self.warmup_steps, "warmup_steps", 0)
        check_number(self.lr, "lr", "positive")  # lr 0 would train nothing, and rank it all the same
        for name in ("weight_decay", "gradient_clip_val"):
            check_number(getattr(self, name), name, "non-negative")


@dataclass(frozen=True)
class Job:
    """One standalone training: everything a fresh process needs, as plain data."""

    model: dict  # ModelSpec.to_dict(): the arch, its space and the task's shape
    task: dict  # the task's record: its registered name and options (`Task.record()`)
    data_dir: str  # where the task's generated data is cached
    seed: int  # the training seed
    budget: Budget
    trainer: dict  # Lightning Trainer options: accelerator, devices, precision
    # `nas.ops.attention.revisions` of the arch's ops: what they compute, as of this code
    op_revisions: dict = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable across runs and machines: the same arch, seed, budget and task, the same id.

        An op of the arch past its first revision is part of the key too, so a result cached
        before the op changed is trained again rather than reused; ops that never changed add
        nothing, so their results keep the ids they had before revisions existed. The shape
        follows from the task, so it is left out: ids stay those of jobs from before `ModelSpec`.
        """
        key = {
            "arch": self.model["arch"],
            "space": self.model["space"],
            "task": self.task,
            "seed": self.seed,
            "budget": dataclasses.asdict(self.budget),
        }
        if self.op_revisions:
            key["op_revisions"] = self.op_revisions
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def result_path(folder: Path, job: Job) -> Path:
    return Path(folder) / f"{job.id}.json"


# What a result file holds (a schema as nas.predict.check takes it): what `train` returns.
RESULT_SCHEMA = {
    "arch": {"depth": int, "layers": [{"attention": str, "heads": int, "ffn_dim": int}]},
    "seed": int,
    "budget": {str: float},
    "op_revisions?": {str: int},
    "metric": METRICS,
    "val": float,
    "val_loss": float,
    "train_seconds": float,
    "host?": str,
    "pid?": int,
}


def read_result(folder: Path, job: Job) -> dict | None:
    """A finished job's result, or None. The folder may be shared by others, so a result is
    checked before it is believed: only the keys `train` writes, finite numbers, a metric in
    its range, and this job's arch, seed and budget; anything else is one ConfigError line
    naming the file (remove it and the job trains again)."""
    path = result_path(folder, job)
    if Path(folder).exists() and not Path(folder).is_dir():
        raise ConfigError(f"standalone_dir {folder}: not a folder")
    if not path.exists():
        return None
    result = read_json(path, "standalone result", RESULT_SCHEMA)
    ranges = {"val": (0.0, 1.0 if result["metric"] == "acc" else math.inf), "val_loss": (0.0, math.inf)}
    for key, (low, high) in ranges.items():
        if not low <= result[key] <= high:
            raise ConfigError(
                f"standalone result {path}: {key} {result[key]!r} is outside {low:g}..{high:g} "
                f"(the range of {result['metric'] if key == 'val' else 'a loss'}); remove the file to train the job again"
            )
    expected = {
        "arch": job.model["arch"],
        "seed": job.seed,
        "budget": dataclasses.asdict(job.budget),
        "op_revisions": job.op_revisions,
    }
    found = {**result, "op_revisions": result.get("op_revisions", {})}  # absent before revisions existed
    other = next((key for key in expected if found[key] != expected[key]), None)
    if other is not None:
        raise ConfigError(
            f"standalone result {path}: its {other} is not this job's; remove the file to train the job again"
        )
    return result


def write_result(folder: Path, job: Job, result: dict) -> None:
    """Whole or absent: written beside, then renamed into place."""
    atomic_write(result_path(folder, job), json.dumps(result, indent=2) + "\n")
