"""Single-path strategies: SPOS supernet training (Guo et al. 2020,
https://arxiv.org/abs/1904.00420) with optional strictly fair paths (FairNAS), the sandwich rule
and in-place distillation (BigNAS) and importance-sorted widths (OFA): see sampling.py and
nas/supernet/importance.py; random search over the trained supernet, the baseline
every search must beat; and `fixed`, which trains one given arch.
"""
from __future__ import annotations

from torch import Tensor

from nas.space import Arch, SearchSpace
from nas.results import SearchResult
from nas.strategies.base import SearchContext, Strategy, check_wholes
from nas.strategies.registry import STRATEGIES
from nas.strategies.sampling import check_options, fair_paths, train_paths
from nas.supernet.importance import sort_by_importance


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
        check_wholes(0, sort_every=sort_every)
        self.sandwich, self.distill, self.fair, self.sort_every = sandwich, distill, fair, sort_every

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        archs = fair_paths(self.space, self.rng) if self.fair else [self.space.sample(self.rng)]
        archs = ctx.agree(archs)  # under DDP every rank trains rank 0's paths
        return train_paths(ctx, train, [self.record(a) for a in archs], self.space, self.sandwich, self.distill)

    def on_epoch_end(self, ctx: SearchContext) -> None:
        if self.sort_every and (ctx.current_epoch + 1) % self.sort_every == 0:
            optimizer = ctx.optimizer(0)  # Lightning wraps it; the state lives in the torch one
            sort_by_importance(self.supernet, getattr(optimizer, "optimizer", optimizer))

    def current_arch(self) -> Arch:
        return self.space.largest()


@STRATEGIES.register("random")
class RandomStrategy(SinglePathStrategy):
    """SPOS training, then `samples` random archs evaluated with inherited weights; best wins."""

    def __init__(self, space: SearchSpace, seed: int = 0, samples: int = 20, **kwargs):
        super().__init__(space, seed, **kwargs)
        check_wholes(1, samples=samples)
        self.samples = samples

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """Ties in the metric (saturated inherited scores are common) go to the lower validation
        loss, then to fewer parameters, not to sampling order."""
        archs = list(dict.fromkeys(self.space.sample(self.rng) for _ in range(self.samples)))
        ranked = self.rank_archs(ctx, archs, val_batches)
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

