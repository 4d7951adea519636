"""Training-step time of the supernet on an arch versus the same step on its extracted subnet.

Weight sharing must not make search slow: the target is a ratio of at most 1.10.
Steps of the two models alternate so that both see the same machine state. Prints JSON.

    python scripts/benchmarks/supernet.py --space search_spaces/lra.yaml --seq-len 1024
"""

import sys

import torch
from harness import interleaved, main, median, parser, settings

from nas.model import ModelShape
from nas.space import SearchSpace
from nas.supernet import Supernet


def sweep(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace.from_yaml(args.space)
    vocab, classes = 32, 10
    net = Supernet(space, ModelShape(vocab, classes, args.seq_len))
    tokens = torch.randint(1, vocab, (args.batch, args.seq_len))
    target = torch.randint(0, classes, (args.batch,))

    def step(model, forward):
        def run():
            torch.nn.functional.cross_entropy(forward(tokens), target).backward()
            model.zero_grad(set_to_none=True)

        return run

    rows = []
    for arch in [space.largest()] + [space.sample(seed) for seed in range(args.archs)]:
        subnet = net.extract(arch)
        times = interleaved(
            {"supernet": step(net, lambda x, arch=arch: net(x, arch)), "subnet": step(subnet, subnet)}, args.repeats
        )
        s, b = median(times["supernet"]), median(times["subnet"])
        rows.append(
            {"arch": arch.to_dict(), "supernet_s": round(s, 4), "subnet_s": round(b, 4), "ratio": round(s / b, 3)}
        )
        print(f"ratio {s / b:.3f}  supernet {s:.3f}s  subnet {b:.3f}s", file=sys.stderr)
    return {
        "settings": settings(args),
        "results": rows,
        "max_ratio": max(r["ratio"] for r in rows),
        "median_ratio": round(median(r["ratio"] for r in rows), 3),
    }


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--space", default="search_spaces/lra.yaml")
    cli.add_argument("--seq-len", type=int, default=1024)
    cli.add_argument("--batch", type=int, default=4)
    cli.add_argument("--archs", type=int, default=4, help="largest arch plus this many sampled")
    cli.add_argument("--repeats", type=int, default=5)
    cli.add_argument("--threads", type=int, default=2)
    main(cli, sweep)
