"""Training-step time of the supernet on an arch versus the same step on its extracted subnet.

Weight sharing must not make search slow: the target is a ratio of at most 1.10.
Steps of the two models alternate so that both see the same machine state. Prints JSON.

    python scripts/bench_supernet.py --space search_spaces/lra.yaml --seq-len 1024
"""
import argparse
import statistics
import time

import torch

from nas.model import ModelShape
from nas.space import SearchSpace
from nas.supernet import Supernet
from report import write_report  # scripts/report.py


def step_time(model, forward, tokens, target) -> float:
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(forward(tokens), target)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/lra.yaml")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--archs", type=int, default=4, help="largest arch plus this many sampled")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = SearchSpace.from_yaml(args.space)
    vocab, classes = 32, 10
    net = Supernet(space, ModelShape(vocab, classes, args.seq_len))
    tokens = torch.randint(1, vocab, (args.batch, args.seq_len))
    target = torch.randint(0, classes, (args.batch,))

    rows = []
    for arch in [space.largest()] + [space.sample(seed) for seed in range(args.archs)]:
        subnet = net.extract(arch)
        supernet_times, subnet_times = [], []
        for i in range(args.repeats + 1):  # the first round warms up
            t_super = step_time(net, lambda x: net(x, arch), tokens, target)
            t_sub = step_time(subnet, subnet, tokens, target)
            if i:
                supernet_times.append(t_super)
                subnet_times.append(t_sub)
        s, b = statistics.median(supernet_times), statistics.median(subnet_times)
        rows.append({"arch": arch.to_dict(), "supernet_s": round(s, 4), "subnet_s": round(b, 4),
                     "ratio": round(s / b, 3)})
        print(f"ratio {s / b:.3f}  supernet {s:.3f}s  subnet {b:.3f}s", flush=True)
    report = {"settings": vars(args), "results": rows,
              "max_ratio": max(r["ratio"] for r in rows),
              "median_ratio": round(statistics.median(r["ratio"] for r in rows), 3)}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
