"""Single-path strategies: SPOS supernet training (Guo et al. 2020,
https://arxiv.org/abs/1904.00420) with optional strictly fair paths (FairNAS), the sandwich rule
and in-place distillation (BigNAS) and importance-sorted widths (OFA): see sampling.py and
nas/supernet/importance.py; random search over the trained supernet, the baseline
every search must beat; and `none`, which trains one fixed arch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from nas.errors import ConfigError
from nas.space import Arch, SearchSpace
from nas.strategies.base import Candidate, SearchResult, Strategy
from nas.strategies.registry import STRATEGIES
from nas.strategies.sampling import check_options, fair_paths, train_paths
from nas.supernet.importance import sort_by_importance
from nas.training.evaluate import evaluate
from nas.training.metrics import score, task_loss


class SinglePathStrategy(Strategy):
    """Trains the shared weights on uniformly sampled paths, one (or a sandwich) per step.

    Args:
        sandwich: per step, also train the largest and smallest arch (BigNAS's sandwich rule).
        distill: weight of in-place distillation of sampled paths towards the largest arch's
            predictions (needs `sandwich`); 0 turns it off.
        fair: per step, train the strictly fair paths of `fair_paths` (every choice of every
            layer once, gradients summed, one optimizer step) instead of one random path.
        sort_every: every this many epochs, reorder heads and FFN units by importance (OFA) so
            the small widths get the important ones; 0 never.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, sandwich: bool = False, distill: float = 0.0,
                 fair: bool = False, sort_every: int = 0):
        super().__init__(space, seed)
        check_options(sandwich, distill)
        if not isinstance(sort_every, int) or sort_every < 0:
            raise ConfigError(f"strategy.sort_every must be 0 (never) or a number of epochs; got {sort_every!r}")
        self.sandwich, self.distill, self.fair, self.sort_every = sandwich, distill, fair, sort_every

    def training_step(self, module, train: dict, val: dict | None) -> dict[str, Tensor]:
        archs = fair_paths(self.space, self.rng) if self.fair else [self.space.sample(self.rng)]
        return train_paths(module, train, [self.record(a) for a in archs], self.space,
                           self.sandwich, self.distill)

    def on_epoch_end(self, module) -> None:
        if self.sort_every and (module.current_epoch + 1) % self.sort_every == 0:
            optimizer = module.optimizers()
            optimizer = optimizer[0] if isinstance(optimizer, list) else optimizer
            sort_by_importance(self.supernet, getattr(optimizer, "optimizer", optimizer))

    def current_arch(self) -> Arch:
        return self.space.largest()


@STRATEGIES.register("random")
class RandomStrategy(SinglePathStrategy):
    """SPOS training, then `samples` random archs evaluated with inherited weights; best wins."""

    def __init__(self, space: SearchSpace, seed: int = 0, samples: int = 20, **kwargs):
        super().__init__(space, seed, **kwargs)
        self.samples = samples

    def finish(self, module, val_batches: list[dict]) -> SearchResult:
        """Ties in the metric (saturated inherited scores are common) go to the lower validation
        loss, then to fewer parameters, not to sampling order."""
        archs = list(dict.fromkeys(self.space.sample(self.rng) for _ in range(self.samples)))
        metric, net = module.metric, module.supernet
        ranked = [Candidate(a, {f"val/{metric}": evaluate(net, a, val_batches, metric),
                                "val/loss": evaluate_loss(net, a, val_batches),
                                "cost/params": sum(p.numel() for p in net.extract(a).parameters())})
                  for a in archs]
        ranked.sort(key=lambda c: (-score(c.metrics[f"val/{metric}"], metric), c.metrics["val/loss"],
                                   c.metrics["cost/params"]))
        return SearchResult(best=ranked[0].arch, ranked=ranked)


@STRATEGIES.register("none")
class FixedStrategy(Strategy):
    """Trains and returns one given arch: a hand-designed baseline."""

    def __init__(self, space: SearchSpace, arch: Arch | str, seed: int = 0):
        super().__init__(space, seed)
        arch = arch if isinstance(arch, Arch) else Arch.from_yaml(arch)
        space.validate(arch)
        self.arch = arch

    def training_step(self, module, train: dict, val: dict | None) -> dict[str, Tensor]:
        loss, _ = module.arch_loss(train, self.arch)
        module.step(loss)
        return {"loss": loss.detach()}

    def current_arch(self) -> Arch:
        return self.arch



@torch.no_grad()
def evaluate_loss(supernet, arch: Arch, batches: list[dict]) -> float:
    """The task loss averaged over `batches`, weighted by their scored targets (as `evaluate`)."""
    was_training = supernet.training
    supernet.eval()
    total, count = 0.0, 0
    device = next(supernet.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        scored = int((batch["target"] != -100).sum())
        total += float(task_loss(supernet(batch["tokens"], arch, batch["mask"]), batch["target"])) * scored
        count += scored
    supernet.train(was_training)
    return total / count
