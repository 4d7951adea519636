"""Supernet training throughput under DDP on CPU (1 and 2 gloo processes), and at a long length
against a plain `nn.TransformerEncoder` (SDPA) of the same width, depth and heads. Prints JSON.

Each DDP step trains one sampled path, drawn on rank 0 and broadcast (`nas.training.search.agree`,
what `SearchModule` does). Throughput counts the tokens of every rank. On a shared machine the
processes compete with other work: compare rows of one run, not runs.

    python scripts/benchmarks/ddp.py --seq-len 256 --long-len 4096
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from harness import interleaved, main, median, parser, seconds, settings
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nas.model import ModelShape
from nas.space import Arch, LayerArch, SearchSpace
from nas.supernet import Supernet
from nas.training.search import agree

VOCAB, CLASSES = 32, 10


class OnePath(nn.Module):
    """The supernet on one arch per call: DDP wraps a module whose forward takes tensors."""

    def __init__(self, supernet: Supernet):
        super().__init__()
        self.supernet = supernet
        self.arch = None

    def forward(self, tokens):
        return self.supernet(tokens, self.arch)


def _worker(rank: int, world: int, port: int, args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different seeds: agreement, not seeding, keeps the paths equal
    space = SearchSpace.from_yaml(args.space)
    net = OnePath(Supernet(space, ModelShape(VOCAB, CLASSES, args.seq_len)))
    model = DistributedDataParallel(net, find_unused_parameters=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(1, VOCAB, (args.batch, args.seq_len))
    target = torch.randint(0, CLASSES, (args.batch,))

    def step():
        net.arch = agree(space.sample())
        loss = nn.functional.cross_entropy(model(tokens), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step_s = median(seconds(step, args.steps, warmup=args.warmup, before=dist.barrier))
    if rank == 0:
        results.put(
            {
                "processes": world,
                "median_step_s": round(step_s, 4),
                "tokens_per_s": round(world * args.batch * args.seq_len / step_s),
            }
        )
    dist.destroy_process_group()


def ddp_throughput(world: int, args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_worker, args=(world, port, args, results), nprocs=world, join=True)
    return results.get()


class PlainEncoder(nn.Module):
    """Embedding, `nn.TransformerEncoder` (pre-norm, SDPA inside), mean pooling, a linear head."""

    def __init__(self, dim: int, heads: int, ffn: int, depth: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (b, n, D)
        return self.head(self.encoder(x).mean(1))  # (b, C)


def long_sequence(args) -> dict:
    """Supernet on its largest all-`full` arch versus the plain encoder, steps alternating."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace.from_yaml(args.space)
    depth, heads, ffn = max(space.depths), max(space.heads), max(space.ffn_dims)
    arch = Arch(depth, tuple(LayerArch("full", heads, ffn) for _ in range(depth)))
    supernet = Supernet(space, ModelShape(VOCAB, CLASSES, args.long_len))
    plain = PlainEncoder(space.dim, heads, ffn, depth, args.long_len)
    tokens = torch.randint(1, VOCAB, (1, args.long_len))
    target = torch.randint(0, CLASSES, (1,))

    def step(model, forward):
        def run():
            nn.functional.cross_entropy(forward(tokens), target).backward()
            model.zero_grad(set_to_none=True)

        return run

    times = interleaved(
        {"supernet": step(supernet, lambda x: supernet(x, arch)), "plain": step(plain, plain)}, args.long_steps
    )
    s, p = median(times["supernet"]), median(times["plain"])
    return {
        "seq_len": args.long_len,
        "arch": arch.to_dict(),
        "supernet_tokens_per_s": round(args.long_len / s),
        "plain_tokens_per_s": round(args.long_len / p),
        "supernet_over_plain_time": round(s / p, 3),
    }


def sweep(args) -> dict:
    ddp = [ddp_throughput(world, args) for world in (1, 2)]
    return {
        "settings": settings(args),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "ddp": ddp,
        "speedup_2_over_1": round(ddp[1]["tokens_per_s"] / ddp[0]["tokens_per_s"], 3),
        "long": long_sequence(args),
    }


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--space", default="search_spaces/tiny.yaml")
    cli.add_argument("--seq-len", type=int, default=256)
    cli.add_argument("--batch", type=int, default=8)
    cli.add_argument("--warmup", type=int, default=3)
    cli.add_argument("--steps", type=int, default=20)
    cli.add_argument("--long-len", type=int, default=4096)
    cli.add_argument("--long-steps", type=int, default=3)
    cli.add_argument("--threads", type=int, default=1)
    main(cli, sweep)
