"""Single-path strategies: SPOS supernet training (Guo et al. 2020,
https://arxiv.org/abs/1904.00420) with an optional sandwich rule and in-place distillation
(BigNAS, https://arxiv.org/abs/2003.11142); random search over the trained supernet, the baseline
every search must beat; and `fixed`, which trains one given arch.
"""
from __future__ import annotations

from torch import Tensor

from nas.space import Arch, SearchSpace
from nas.metrics import evaluate, score, soft_cross_entropy
from nas.results import Candidate, SearchResult
from nas.strategies.base import SearchContext, Strategy
from nas.strategies.registry import STRATEGIES


class SinglePathStrategy(Strategy):
    """Trains the shared weights on uniformly sampled paths, one (or a sandwich) per step.

    Args:
        sandwich: per step, also train the largest and smallest arch (BigNAS's sandwich rule).
        distill: weight of in-place distillation of sampled paths towards the largest arch's
            predictions (with `sandwich`); 0 turns it off.
    """

    def __init__(self, space: SearchSpace, seed: int = 0, sandwich: bool = False, distill: float = 0.0):
        super().__init__(space, seed)
        self.sandwich, self.distill = sandwich, distill

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        if not self.sandwich:
            loss, _ = ctx.arch_loss(train, self.record(ctx.agree(self.space.sample(self.rng))))
            ctx.step(loss)
            return {"loss": loss.detach()}
        # Sandwich: gradients of the largest, the smallest and a random path, summed, one step.
        big_loss, big_logits = ctx.arch_loss(train, self.space.largest())
        total = big_loss
        for arch in (self.space.smallest(), self.record(ctx.agree(self.space.sample(self.rng)))):
            loss, logits = ctx.arch_loss(train, arch)
            if self.distill:
                loss = (1 - self.distill) * loss + self.distill * soft_cross_entropy(logits, big_logits.detach(), train["target"])
            total = total + loss
        ctx.step(total)
        return {"loss": big_loss.detach()}

    def current_arch(self) -> Arch:
        return self.space.largest()


@STRATEGIES.register("random")
class RandomStrategy(SinglePathStrategy):
    """SPOS training, then `samples` random archs evaluated with inherited weights; best wins."""

    def __init__(self, space: SearchSpace, seed: int = 0, samples: int = 20, **kwargs):
        super().__init__(space, seed, **kwargs)
        self.samples = samples

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        archs = list(dict.fromkeys(self.space.sample(self.rng) for _ in range(self.samples)))
        metric = ctx.metric
        ranked = [Candidate(a, {f"val/{metric}": evaluate(ctx.supernet, val_batches, metric, arch=a)})
                  for a in archs]
        ranked.sort(key=lambda c: score(c.metrics[f"val/{metric}"], metric), reverse=True)
        return SearchResult(best=ranked[0].arch, ranked=ranked)


@STRATEGIES.register("fixed")
class FixedStrategy(Strategy):
    """Trains and returns one given arch: a hand-designed baseline."""

    def __init__(self, space: SearchSpace, arch: Arch | str, seed: int = 0):
        super().__init__(space, seed)
        arch = arch if isinstance(arch, Arch) else Arch.from_yaml(arch)
        space.validate(arch)
        self.arch = arch

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        loss, _ = ctx.arch_loss(train, self.arch)
        ctx.step(loss)
        return {"loss": loss.detach()}

    def current_arch(self) -> Arch:
        return self.arch

