"""Checks every task must pass: batch shapes and ranges, disjoint splits, determinism."""

from pathlib import Path

import numpy as np
import torch

from nas.tasks.base import IGNORE_INDEX, PAD, SPLITS

# Real LRA ListOps files, beside the repo (absent on machines without the shared folder).
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
LRA_LISTOPS = SHARED / "data" / "lra_listops_sample"


def examples(task, split: str) -> list[bytes]:
    """Every example of a split as bytes (tokens, then target), in order."""
    task.setup()
    return [
        np.asarray(tokens, dtype=np.int64).tobytes() + b"|" + np.asarray(target, dtype=np.int64).tobytes()
        for tokens, target in task.splits[split]
    ]


def check_batches(task) -> None:
    """A batch of each split has the contract's shapes, dtypes, padding and value ranges."""
    for loader in (task.train_dataloader(), task.val_dataloader(), task.test_dataloader()):
        batch = next(iter(loader))
        tokens, mask, target = batch["tokens"], batch["mask"], batch["target"]
        b, n = tokens.shape
        assert tokens.dtype == target.dtype == torch.long and mask.dtype == torch.bool
        assert mask.shape == (b, n) and n <= task.seq_len
        assert (tokens[~mask] == PAD).all()
        assert tokens[mask].min() >= 1 and tokens[mask].max() < task.vocab_size
        if task.readout == "classify":
            assert target.shape == (b,)
            assert target.min() >= 0 and target.max() < task.num_classes
        else:
            assert target.shape == (b, n)
            scored = target != IGNORE_INDEX
            assert scored.any(1).all(), "every sequence has a scored position"
            assert not scored[~mask].any(), "padding is never scored"
            assert target[scored].min() >= 0 and target[scored].max() < task.num_classes


def check_disjoint(task) -> None:
    """No example occurs twice, within a split or across splits."""
    seen = [examples(task, split) for split in SPLITS]
    assert all(seen), "every split has examples"
    for i, a in enumerate(seen):
        assert len(set(a)) == len(a), f"{SPLITS[i]} repeats an example"
        for j in range(i):
            assert not set(a) & set(seen[j]), f"{SPLITS[i]} and {SPLITS[j]} share examples"


def check_determinism(make, tmp_path: Path) -> None:
    """make(seed, data_dir): the same seed gives the same data, in a fresh data dir and from the
    cache; another seed gives other data."""

    def data(seed, folder):
        task = make(seed, tmp_path / folder)
        return {split: examples(task, split) for split in SPLITS}

    first = data(0, "a")
    assert data(0, "b") == first  # generated again from scratch
    assert data(0, "a") == first  # read back from the cache
    assert data(1, "a")["train"] != first["train"]
