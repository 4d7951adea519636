"""Differentiable search: DARTS (Liu et al. 2019, https://arxiv.org/abs/1806.09055) and GDAS
(Dong & Yang 2019, https://arxiv.org/abs/1910.04465).

One vector of architecture logits per decision of the space. DARTS mixes every candidate by
the softmax of its logits; GDAS samples one candidate per decision per step with hard
Gumbel-softmax (straight-through), so memory stays that of a single path. Weight steps on
train batches alternate with architecture steps on validation batches. The derived arch is
the argmax of every decision.

Partial channels (PC-DARTS, Xu et al. 2020, https://arxiv.org/abs/1907.05737): with
partial = K > 1 the attention candidates see 1/K of the heads and the rest bypass them; edge
normalisation weights each layer's two inputs to the attention node (residual, mixed attention)
by 2 * softmax(beta), so they sum to 2 (uniform beta = the plain residual x + attn(x)) and the
alphas are not left to absorb the scale changes that come with sampling a fraction of heads.

When the weights do not decide, `shrink.every` drops each decision's weakest candidate every few
epochs. At the end `decide.rule` says how the arch is taken: `greedy` (the default) settles the
decisions one by one among all their remaining candidates by the supernet's validation metric,
`top2` settles each decision between its top two, `argmax` takes the weights' choice
(nas.strategies.darts_decide).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.metrics import task_loss
from nas.space import Arch, SearchSpace
from nas.strategies.base import (
    NO_SETTING,
    SearchContext,
    SearchReport,
    SearchResult,
    SearchSetting,
    Strategy,
    check_numbers,
    check_wholes,
)
from nas.strategies.constraints import Constraints, check_constraints
from nas.strategies.darts_decide import (
    DECIDE,
    DecideConfig,
    DecideRule,
    ShrinkConfig,
    Shrinker,
    SupernetJudge,
)
from nas.strategies.penalties import (
    CostPenalty,
    PenaltyConfig,
    SharpenConfig,
    sharpen_penalty,
)
from nas.strategies.registry import STRATEGIES
from nas.strategies.schedule import TemperatureConfig, TemperatureSchedule
from nas.viz import margins

__all__ = ["DECIDE", "DartsConfig", "DartsStrategy", "GdasConfig", "GdasStrategy"]


@dataclass(frozen=True)
class DartsConfig:
    """DARTS's options (`strategy.*`), its parts' in their own sub-configs."""

    arch_lr: float = 3e-3  # Adam on the architecture logits
    arch_weight_decay: float = 1e-3
    second_order: bool = False  # the unrolled architecture gradient (DARTS eq. 7, finite differences)
    warmup_epochs: int = 0  # weight-only epochs before architecture steps start
    partial: int = 1  # PC-DARTS K: attention candidates see max_heads / K heads, the rest bypass (1: DARTS)
    edge_norm: bool = True  # with partial > 1, PC-DARTS edge weights on each layer's residual and attention
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)  # of the softmax over the
    # logits (a low end sharpens the mixture; 1, 1: DARTS)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)  # the cost penalty
    sharpen: SharpenConfig = field(default_factory=SharpenConfig)  # entropy and zero-one penalties
    shrink: ShrinkConfig = field(default_factory=ShrinkConfig)  # progressive shrinking (P-DARTS)
    decide: DecideConfig = field(default_factory=DecideConfig)  # how the final arch is taken
    constraints: dict[str, float] | None = None  # hard limits {cost kind: maximum}: the arch is decided among
    # the archs within them (training is unconstrained; a penalty steers the weights)

    def __post_init__(self):
        check_numbers("positive", arch_lr=self.arch_lr)
        check_constraints(self.constraints)
        check_numbers("non-negative", arch_weight_decay=self.arch_weight_decay)
        check_wholes(0, warmup_epochs=self.warmup_epochs)
        check_wholes(1, partial=self.partial)


@STRATEGIES.register("darts")
class DartsStrategy(Strategy):
    """DARTS over every decision of the space, from parts: a temperature schedule, a cost
    penalty, sharpening penalties, a shrinker and a decide rule (see `DartsConfig`).

    The decide rule judges by the supernet on the validation batches (metric, then loss, then
    cost; under a cost penalty, loss plus the arch's penalty, then cost).
    """

    Config = DartsConfig
    hard = False

    def __init__(
        self, space: SearchSpace, config: DartsConfig | None = None, setting: SearchSetting = NO_SETTING, seed: int = 0
    ):
        super().__init__(space, config, setting, seed)
        c = self.config
        if space.max_heads % c.partial:
            raise ConfigError(f"strategy.partial={c.partial}: allowed: a divisor of max_heads ({space.max_heads})")
        self.edge_norm = c.edge_norm and c.partial > 1
        self.temperature = TemperatureSchedule(c.temperature)
        self.penalty = CostPenalty(c.penalty, space, setting.seq_len)
        self.limits = Constraints(c.constraints, space, setting.seq_len)
        self.shrinker = Shrinker(c.shrink, c.warmup_epochs)
        self.decide = DecideRule(c.decide)
        self.register_buffer("softmax_tau", torch.tensor(float(c.temperature.start)))  # this epoch's
        self.alphas = nn.ParameterDict(
            {
                _param_key(key): nn.Parameter(1e-3 * torch.randn(len(options)))
                for key, options in space.decisions().items()
            }
        )
        # PC-DARTS edge logits: per layer (residual, mixed attention); absent for plain DARTS
        self.betas = nn.Parameter(torch.zeros(space.max_depth, 2)) if self.edge_norm else None
        self.history: list[dict[str, list[float]]] = []  # probabilities after each epoch
        if c.shrink.every:  # the remaining candidates, in state_dict so that a resumed search has them
            for key, options in space.decisions().items():
                self.register_buffer(_keep_key(key), torch.ones(len(options), dtype=torch.bool))
        self.comparison: dict[str, dict] = {}  # the final decision's scores per decision (greedy, top2)

    # -- the distribution ------------------------------------------------------------------
    def logits(self) -> dict[str, Tensor]:
        """Per decision its logits; -inf for candidates that shrinking dropped."""
        return {
            key: self.alphas[_param_key(key)].masked_fill(~keep, float("-inf"))
            if keep is not None
            else self.alphas[_param_key(key)]
            for key, keep in self.keep().items()
        }

    def keep(self) -> dict[str, Tensor | None]:
        """Per decision a bool mask of the candidates still in the search (None: not shrinking)."""
        shrinking = self.config.shrink.every
        return {key: self.get_buffer(_keep_key(key)) if shrinking else None for key in self.space.decisions()}

    def probabilities(self) -> dict[str, Tensor]:
        return {key: F.softmax(logit / self.softmax_tau, -1) for key, logit in self.logits().items()}

    def edge_weights(self) -> Tensor | None:
        """(L, 2) weights of each layer's residual and attention inputs, each row summing to 2."""
        return None if self.betas is None else 2 * F.softmax(self.betas, -1)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.parameters()) + ([] if self.betas is None else [self.betas])

    def mixture_weights(self, ctx: SearchContext | None = None) -> dict[str, Tensor]:
        """What the supernet mixes with this step (GDAS: a straight-through sample, its noise
        agreed across ranks through `ctx`)."""
        return self.probabilities()

    def current_arch(self) -> Arch:
        return self._argmax_arch(self.logits())

    def _argmax_arch(self, scores: dict[str, Tensor]) -> Arch:
        decisions = self.space.decisions()
        return self.space.arch_from_choices({key: decisions[key][int(s.argmax())] for key, s in scores.items()})

    # -- training --------------------------------------------------------------------------
    def attach(self, supernet) -> None:
        super().attach(supernet)
        self.penalty.attach(supernet.shape)
        self.limits.attach(supernet.shape)  # an impossible limit fails before training

    def optimizers(self) -> list[torch.optim.Optimizer]:
        if not hasattr(self, "_arch_optimizer"):
            self._arch_optimizer = torch.optim.Adam(
                self.arch_parameters(),
                lr=self.config.arch_lr,
                betas=(0.5, 0.999),
                weight_decay=self.config.arch_weight_decay,
            )
        return [self._arch_optimizer]

    def arch_penalty(self) -> Tensor:
        """The cost penalty and the sharpening terms on the present distribution."""
        probs = self.probabilities()
        return self.penalty(probs) + sharpen_penalty(self.config.sharpen, probs)

    def loss(self, ctx: SearchContext, batch: dict, weights: dict[str, Tensor], detach: bool = False) -> Tensor:
        """The task loss under `weights`; detach: the weight step's, no gradient to the betas."""
        edges = self.edge_weights()
        if self.hard:
            logits = ctx.supernet.forward_mixed(batch["tokens"], weights, batch["mask"], hard=True)
        else:
            logits = ctx.supernet.forward_mixed(
                batch["tokens"],
                weights,
                batch["mask"],
                partial=self.config.partial,
                edges=None if edges is None else edges.detach() if detach else edges,
            )
        return task_loss(logits, batch["target"])

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        logs = {}
        if val is not None and ctx.current_epoch >= self.config.warmup_epochs:
            if self.config.second_order:
                val_loss = self._second_order_step(ctx, train, val)
            else:
                val_loss = self.loss(ctx, val, self.mixture_weights(ctx))
                penalty = self.arch_penalty()
                ctx.step(val_loss + penalty, optimizer_index=1)
                if self.config.penalty.cost is not None:
                    logs["cost_penalty"] = penalty.detach()
            logs["arch_loss"] = val_loss.detach()
        weights = {k: v.detach() for k, v in self.mixture_weights(ctx).items()}
        if self.hard:
            self.record(self._argmax_arch(weights))
        loss = self.loss(ctx, train, weights, detach=True)
        ctx.step(loss)
        logs["loss"] = loss.detach()
        return logs

    def _second_order_step(self, ctx: SearchContext, train: dict, val: dict) -> Tensor:
        """DARTS eq. 7-8: the val gradient at one virtual weight step, with the Hessian-vector
        product by central finite differences."""
        weights = list(ctx.supernet.parameters())
        xi = ctx.optimizer(0).param_groups[0]["lr"]
        backup = [w.detach().clone() for w in weights]
        grads = torch.autograd.grad(self.loss(ctx, train, self.mixture_weights(ctx)), weights, allow_unused=True)
        with torch.no_grad():
            for w, g in zip(weights, grads):
                if g is not None:
                    w.sub_(xi * g)  # the virtual step w' = w - xi * dL_train/dw
        val_loss = self.loss(ctx, val, self.mixture_weights(ctx))
        alphas = self.arch_parameters()
        grads = torch.autograd.grad(val_loss, alphas + weights, allow_unused=True)
        d_alpha, d_weights = grads[: len(alphas)], grads[len(alphas) :]
        norm = torch.sqrt(sum((g * g).sum() for g in d_weights if g is not None))
        eps = 0.01 / (norm + 1e-12)

        def train_grad_at(sign: float) -> tuple[Tensor, ...]:
            with torch.no_grad():  # w +- eps * dL_val/dw'
                for w, original, g in zip(weights, backup, d_weights):
                    w.copy_(original if g is None else original + sign * eps * g)
            return torch.autograd.grad(self.loss(ctx, train, self.mixture_weights(ctx)), alphas)

        plus, minus = train_grad_at(1.0), train_grad_at(-1.0)
        with torch.no_grad():
            for w, original in zip(weights, backup):
                w.copy_(original)
        optimizer = ctx.optimizer(1)
        optimizer.zero_grad()
        penalty = self.arch_penalty()
        penalty_grads = (
            torch.autograd.grad(penalty, alphas, allow_unused=True) if penalty.requires_grad else [None] * len(alphas)
        )
        for a, da, hp, hm, pg in zip(alphas, d_alpha, plus, minus, penalty_grads):
            a.grad = (0 if da is None else da) - xi * (hp - hm) / (2 * eps) + (0 if pg is None else pg)
        optimizer.step()
        return val_loss

    # -- state and logging -----------------------------------------------------------------
    def on_epoch_end(self, ctx: SearchContext) -> None:
        self.shrinker.on_epoch_end(ctx.current_epoch, self.probabilities(), self.keep())
        probs = {k: [round(float(p), 4) for p in v.detach()] for k, v in self.probabilities().items()}
        self.history.append(probs)
        self.log_distribution(ctx, probs)
        for key, margin in margins(probs).items():
            ctx.log(f"arch/margin/{key}", margin)
        if not self.hard and ctx.max_epochs > 1:  # anneal the softmax temperature for the next epoch
            self.softmax_tau.fill_(self.temperature.after(ctx.current_epoch + 1, ctx.max_epochs))

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """The arch the decide rule settles: by the supernet's scores on `val_batches`, each decision
        tested against its runner-up on the same items (`evidence`); or the argmax, untested."""
        probs = {k: v.detach() for k, v in self.probabilities().items()}
        start = self._within_constraints(ctx, self._argmax_choices(probs), probs)
        if not self.decide.judges:
            self.evidence = ()
            return SearchResult(best=self.space.arch_from_choices(start))
        self.penalty.attach(ctx.supernet.shape)  # a strategy may be asked without having trained
        judge = SupernetJudge(
            ctx.supernet,
            val_batches,
            ctx.metric,
            cost_of=self.penalty.of,
            penalty=self.penalty.of_arch if self.penalty.active else None,
            violation=self.limits.violation if self.limits else None,
        )
        fit = (lambda choices, key: self.limits.repair(choices, probs, keep=key)) if self.limits else None
        best, self.comparison, self.evidence = self.decide(
            judge, self.space, probs, start if self.limits else None, fit
        )
        if self.limits and not self.limits.feasible(best):  # top2 may combine changes that are within them alone
            best = self.space.arch_from_choices(
                self._within_constraints(ctx, {**start, **self.space.choices_of(best)}, probs)
            )
        return SearchResult(best=best)

    def _argmax_choices(self, probs: dict[str, Tensor]) -> dict:
        decisions = self.space.decisions()
        return {key: decisions[key][int(p.argmax())] for key, p in probs.items()}

    def _within_constraints(self, ctx: SearchContext, choices: dict, probs: dict[str, Tensor]) -> dict:
        """`choices`, or under constraints the nearest choices within them (`Constraints.repair`);
        one line if there are none."""
        if not self.limits:
            return choices
        self.limits.attach(ctx.supernet.shape)
        repaired = self.limits.repair(choices, probs)
        if repaired is None:
            raise self.limits.refusal("no arch that the architecture weights can be moved to")
        return repaired

    def report(self) -> SearchReport:
        return SearchReport.of(
            self.history,
            comparisons=self.comparison,
            shrunk=tuple(self.shrinker.log),
            min_margin=self.config.decide.min_margin,
            evidence=self.evidence,
        )

    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "history": self.history, "shrunk": self.shrinker.log}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.history = state["history"]
        self.shrinker.log = state.get("shrunk", [])  # checkpoints from before shrinking existed

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        """Resume across `shrink.every`: a checkpoint written without shrinking has dropped
        nothing (every candidate stays); one that dropped candidates needs shrinking on."""
        for key, options in self.space.decisions().items():
            name = prefix + _keep_key(key)
            if self.config.shrink.every and name not in state_dict:
                state_dict[name] = torch.ones(len(options), dtype=torch.bool)
            elif not self.config.shrink.every and name in state_dict:
                if not bool(state_dict[name].all()):
                    raise ConfigError(
                        f"the checkpoint's search dropped candidates of {key} "
                        "(strategy.shrink.every > 0): resume it with strategy.shrink.every > 0"
                    )
                del state_dict[name]  # nothing dropped yet: the same as not shrinking
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


@dataclass(frozen=True)
class GdasConfig(DartsConfig):
    """GDAS's options: DARTS's and the Gumbel temperature."""

    gumbel: TemperatureConfig = field(default_factory=lambda: TemperatureConfig(start=10.0, end=0.1))  # of
    # the Gumbel-softmax samples, annealed down from start to end

    def __post_init__(self):
        super().__post_init__()
        if self.gumbel.end > self.gumbel.start:
            raise ConfigError(
                f"gumbel.end={self.gumbel.end!r} > strategy.gumbel.start={self.gumbel.start!r}: "
                "the temperature is annealed from gumbel.start down to gumbel.end"
            )


@STRATEGIES.register("gdas")
class GdasStrategy(DartsStrategy):
    """GDAS: one hard Gumbel-softmax sample per decision per step, its temperature annealed
    linearly from `gumbel.start` to `gumbel.end` over the epochs."""

    Config = GdasConfig
    hard = True

    def __init__(
        self, space: SearchSpace, config: GdasConfig | None = None, setting: SearchSetting = NO_SETTING, seed: int = 0
    ):
        super().__init__(space, config, setting, seed)
        self.gumbel = TemperatureSchedule(self.config.gumbel)
        # float: an int from the command line would round
        self.register_buffer("tau", torch.tensor(float(self.config.gumbel.start)))

    def mixture_weights(self, ctx: SearchContext | None = None) -> dict[str, Tensor]:
        # F.gumbel_softmax(hard=True) spelled out, so that rank 0's Gumbel noise is shared: under
        # DDP every rank then samples the same path (same RNG use as F.gumbel_softmax).
        logits = self.logits()
        noise = {k: -torch.empty_like(v).exponential_().log() for k, v in logits.items()}  # Gumbel(0, 1)
        if ctx is not None:
            agreed = ctx.agree({k: v.cpu() for k, v in noise.items()})
            noise = {k: v.to(logits[k].device) for k, v in agreed.items()}
        weights = {}
        for key, logit in logits.items():
            soft = F.softmax((logit + noise[key]) / float(self.tau), -1)  # (C,)
            hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)  # (C,)
            weights[key] = hard - soft.detach() + soft  # straight-through: forward hard, gradient soft
        return weights

    def on_epoch_end(self, ctx: SearchContext) -> None:
        super().on_epoch_end(ctx)
        self.tau.fill_(self.gumbel.after(ctx.current_epoch + 1, ctx.max_epochs))
        ctx.log("arch/tau", float(self.tau))


def _param_key(decision: str) -> str:
    return decision.replace(".", "_")  # ParameterDict keys may not hold dots


def _keep_key(decision: str) -> str:
    return f"keep_{_param_key(decision)}"  # a buffer name
