"""Two CPU (gloo) DDP processes with different seeds train the same arch at every step.

Each rank seeds its strategy and torch differently, so without `SearchContext.agree` their
samples would differ. Both ranks read the whole (unshuffled) training set, so DDP's averaged
gradient of two equal batches equals one process's gradient: the 2-process search must then
match a single-process search seeded like rank 0, step for step and in its result.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from pytorch_lightning.strategies import DDPStrategy

from nas.supernet import Supernet
from nas.training.run import run_search

from ..strategies.planted import FetchTask, make, planted_space
from ..strategies.planted import trainer as planted_trainer

STRATEGY_OPTIONS = {
    "random": {"samples": 4},
    "gdas": {},
    "enas": {"controller_every": 1, "controller_samples": 2, "final_samples": 4},
}


class InOrderFetch(FetchTask):
    """FetchTask without shuffling: the data a rank sees does not depend on its seed."""

    def train_dataloader(self):
        return self._loader(self.train_set, False)


def _search(name: str, seed: int, root: Path, **trainer_kwargs) -> dict:
    """One tiny search; returns the archs trained at each step and the chosen arch."""
    torch.manual_seed(seed)  # different per rank: supernet init is synced by DDP, samples must be agreed
    space = planted_space()
    task = InOrderFetch(seq_len=16, distance=15, size=128, batch_size=32)
    strategy = make(name, space, seed=seed, **STRATEGY_OPTIONS[name])
    trained = []
    recorded = strategy.record
    strategy.record = lambda arch: recorded(trained.append(arch.to_dict()) or arch)
    trainer = planted_trainer(root, 2, **trainer_kwargs)
    _, result = run_search(Supernet(space, task.shape), strategy, task, "acc", trainer, eval_batches=2, lr=3e-3)
    return {"trained": trained, "best": result.best.to_dict()}


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )
    torch.set_num_threads(1)
    out = {}
    for name in STRATEGY_OPTIONS:
        out[name] = _search(
            name,
            seed=rank + 1,
            root=Path(root),  # rank 0: seed 1, rank 1: seed 2
            devices=2,
            use_distributed_sampler=False,
            strategy=DDPStrategy(find_unused_parameters=True, process_group_backend="gloo"),
        )
    Path(root, f"rank{rank}.json").write_text(json.dumps(out))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()  # gloo aborts at exit if its group is left open


def _single(rank: int, root: str) -> None:
    """The one-process reference, in a fresh process like each DDP rank: global torch state
    that earlier tests in this process changed (threads, flags) cannot make it round otherwise."""
    torch.set_num_threads(1)
    out = {name: _search(name, seed=1, root=Path(root, "single")) for name in STRATEGY_OPTIONS}
    Path(root, "single.json").write_text(json.dumps(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_with_different_seeds_train_the_same_archs_as_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    mp.spawn(_single, args=(str(tmp_path),), nprocs=1, join=True)
    singles = json.loads((tmp_path / "single.json").read_text())
    for name in STRATEGY_OPTIONS:
        single = singles[name]
        zero, one = ranks[0][name], ranks[1][name]
        assert len(zero["trained"]) == 32  # 2 epochs of 16 steps (the 512 val examples cycle the 128 train)
        assert zero["trained"] == one["trained"], name
        assert len({json.dumps(a, sort_keys=True) for a in zero["trained"]}) > 1, name  # really sampled
        assert zero["best"] == one["best"], name
        assert zero == single, name
