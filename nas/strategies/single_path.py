"""Single-path strategies: SPOS supernet training (Guo et al. 2020,
https://arxiv.org/abs/1904.00420) with optional strictly fair paths (FairNAS), the sandwich rule
and in-place distillation (BigNAS) and importance-sorted widths (OFA): see sampling.py and
nas/supernet/importance.py; random search over the trained supernet, the baseline
every search must beat; and `fixed`, which trains one given arch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from nas.results import SearchResult
from nas.space import Arch, SearchSpace
from nas.strategies.base import (
    NO_SETTING,
    SearchContext,
    SearchSetting,
    Strategy,
    check_wholes,
)
from nas.strategies.constraints import Constraints, check_constraints
from nas.strategies.registry import STRATEGIES
from nas.strategies.sampling import check_options, fair_paths, train_paths
from nas.supernet.importance import sort_by_importance


@dataclass(frozen=True)
class SinglePathConfig:
    """How a sampling strategy trains the shared weights (`strategy.*`).

    `fair` paths rank archs better than one random path (docs/ranking-study.md: Kendall tau
    0.68-0.77 against 0.10-0.49 at 64 tokens, 0.43 against 0.19 at 1024) at K times the step
    (K: the most choices of a decision)."""

    sandwich: bool = False  # per step, also train the largest and smallest arch (BigNAS's sandwich rule)
    distill: float = 0.0  # in-place distillation weight towards the largest arch's predictions (needs sandwich)
    fair: bool = True  # per step, the strictly fair paths of `fair_paths` (FairNAS); false: one random path (SPOS)
    sort_every: int = 0  # every this many epochs, reorder heads and FFN units by importance (OFA); 0 never

    def __post_init__(self):
        check_options(self.sandwich, self.distill)
        check_wholes(0, sort_every=self.sort_every)


class SinglePathStrategy(Strategy):
    """Trains the shared weights on uniformly sampled paths, one (or a sandwich) per step."""

    Config = SinglePathConfig

    def __init__(
        self,
        space: SearchSpace,
        config: SinglePathConfig | None = None,
        setting: SearchSetting = NO_SETTING,
        seed: int = 0,
    ):
        super().__init__(space, config, setting, seed)
        c = self.config
        self.sandwich, self.distill, self.fair, self.sort_every = c.sandwich, c.distill, c.fair, c.sort_every

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


MAX_DRAWS = 50  # under constraints, random search tries up to this many archs per sample it keeps


@dataclass(frozen=True)
class RandomConfig(SinglePathConfig):
    """Random search's options: SPOS training's, and the archs it samples."""

    samples: int = 20  # archs sampled at the end and evaluated with inherited weights
    constraints: dict[str, float] | None = None  # hard limits {cost kind: maximum}: only archs within them are sampled

    def __post_init__(self):
        super().__post_init__()
        check_wholes(1, samples=self.samples)
        check_constraints(self.constraints)


@STRATEGIES.register("random")
class RandomStrategy(SinglePathStrategy):
    """SPOS training, then `samples` random archs evaluated with inherited weights; best wins."""

    Config = RandomConfig

    def __init__(
        self, space: SearchSpace, config: RandomConfig | None = None, setting: SearchSetting = NO_SETTING, seed: int = 0
    ):
        super().__init__(space, config, setting, seed)
        self.samples = self.config.samples
        self.limits = Constraints(self.config.constraints, space, setting.seq_len)

    def attach(self, supernet) -> None:
        super().attach(supernet)
        self.limits.attach(supernet.shape)  # an impossible limit fails before training

    def _draw(self, ctx: SearchContext) -> list[Arch]:
        """`samples` random archs within the constraints (exactly `samples` draws without any)."""
        if not self.limits:
            return [self.space.sample(self.rng) for _ in range(self.samples)]
        self.limits.attach(ctx.supernet.shape)
        drawn = []
        for _ in range(MAX_DRAWS * self.samples):
            arch = self.space.sample(self.rng)
            if self.limits.feasible(arch):
                drawn.append(arch)
                if len(drawn) == self.samples:
                    break
        return drawn or self.limits.cheapest_feasible()

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """Ties in the metric (saturated inherited scores are common) go to the lower validation
        loss, then to fewer parameters, not to sampling order. The best is tested against the
        second best on the same items (`test_pick`). Under `constraints`, `samples` archs within
        them are drawn (up to MAX_DRAWS times as many tries; none found: the cheapest archs within
        them), and a space with none is one line."""
        archs = list(dict.fromkeys(self._draw(ctx)))
        if not archs:
            raise self.limits.refusal(f"none of {MAX_DRAWS * self.samples} random archs")
        ranked = self.rank_archs(ctx, archs, val_batches)
        self.evidence = self.test_pick(ctx, ranked, val_batches)
        return SearchResult(best=ranked[0].arch, ranked=ranked)


@dataclass(frozen=True)
class FixedConfig:
    """The arch `strategy=fixed` trains: `nas-search strategy=fixed strategy.arch=my_arch.yaml`."""

    arch: str  # path to an arch YAML file (required; from Python, an Arch will do)


@STRATEGIES.register("fixed")
class FixedStrategy(Strategy):
    """Trains and returns one given arch: a hand-designed baseline."""

    Config = FixedConfig

    def __init__(self, space: SearchSpace, config: FixedConfig, setting: SearchSetting = NO_SETTING, seed: int = 0):
        super().__init__(space, config, setting, seed)
        arch = config.arch if isinstance(config.arch, Arch) else Arch.from_yaml(config.arch)
        space.validate(arch)
        self.arch = arch

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        loss, _ = ctx.arch_loss(train, self.arch)
        ctx.step(loss)
        return {"loss": loss.detach()}

    def current_arch(self) -> Arch:
        return self.arch
