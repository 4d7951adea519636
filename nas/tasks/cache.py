"""The disk cache of generated data, and sampling of distinct examples.

Each parameter set gets its own folder, named by a hash of the parameters, so that changing a
parameter regenerates instead of reusing stale data. Files appear only complete
(`nas.atomic.atomic_write`), so an interrupted run leaves no broken cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nas.atomic import atomic_write
from nas.errors import ConfigError


def cache_dir(data_dir: Path, task: str, params: dict) -> Path:
    """The folder for data generated with `params` (JSON-able), with params.json for people."""
    text = json.dumps(params, sort_keys=True)
    folder = Path(data_dir) / task / hashlib.sha256(text.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "params.json").exists():
        atomic_write(folder / "params.json", text + "\n")
    return folder


def cached_arrays(path: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays saved at `path` (.npz), made by `make()` and saved there on first use."""
    if path.exists():
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    arrays = make()
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return arrays


def sample_distinct(
    sample: Callable[[np.random.Generator, int], dict[str, np.ndarray]],
    total: int,
    rng: np.random.Generator,
    task: str,
    max_rounds: int = 20,
) -> dict[str, np.ndarray]:
    """`total` examples no two of which are equal, from `sample(rng, n) -> {field: (n, ...)}`.

    Distinct examples make the train / val / test splits cut from them disjoint.
    """
    seen: set[bytes] = set()
    kept: list[dict[str, np.ndarray]] = []
    for _ in range(max_rounds):
        need = total - len(seen)
        if need == 0:
            break
        batch = sample(rng, need)
        rows = np.concatenate([np.asarray(a).reshape(need, -1).astype(np.int64) for a in batch.values()], axis=1)
        keep = []
        for i, row in enumerate(rows):
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                keep.append(i)
        kept.append({name: a[keep] for name, a in batch.items()})
    if len(seen) < total:
        raise ConfigError(
            f"task '{task}': found only {len(seen)} distinct examples of the "
            f"{total} asked for; ask for fewer or widen the vocabulary/length"
        )
    return {name: np.concatenate([k[name] for k in kept]) for name in kept[0]}


def generated_splits(task, version: int) -> dict[str, dict[str, np.ndarray]]:
    """The splits of a task that generates its examples with `task.sample(rng, n)`, cached.

    The cache key is the task's config (less loader-only options) and its data `version`;
    examples are distinct across all splits (`sample_distinct`).
    """
    c = task.config
    params = {"version": version, **dataclasses.asdict(c)}
    for loader_only in ("batch_size", "num_workers"):
        params.pop(loader_only)
    sizes = [c.num_train, c.num_val, c.num_test]

    def generate() -> dict[str, np.ndarray]:
        return sample_distinct(task.sample, sum(sizes), np.random.default_rng(c.seed), task.name)

    data = cached_arrays(cache_dir(task.data_dir, task.name, params) / "data.npz", generate)
    cuts = np.cumsum([0, *sizes])
    return {
        split: {name: a[lo:hi] for name, a in data.items()}
        for split, lo, hi in zip(("train", "val", "test"), cuts[:-1], cuts[1:])
    }


def choose(rng: np.random.Generator, n: int, population: int, k: int) -> np.ndarray:
    """(n, k): each row k distinct integers from range(population), in increasing order."""
    if k * k <= population:  # collisions are rare: draw with replacement, redraw rows that collide
        rows = np.sort(rng.integers(0, population, (n, k)), axis=1)
        while len(bad := np.flatnonzero((np.diff(rows, axis=1) == 0).any(1))):
            rows[bad] = np.sort(rng.integers(0, population, (len(bad), k)), axis=1)
        return rows
    chunk = max(1, (1 << 22) // population)  # bounds the memory of the random keys to sort
    return (
        np.concatenate(
            [
                np.sort(rng.random((min(chunk, n - start), population)).argsort(1)[:, :k], axis=1)
                for start in range(0, n, chunk)
            ]
        )
        if n
        else np.zeros((0, k), dtype=np.int64)
    )


def shuffle_rows(rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
    """Each row of `rows` in its own random order."""
    return np.take_along_axis(rows, rng.random(rows.shape).argsort(1), 1)
