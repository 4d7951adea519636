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

When the weights do not decide, `shrink_every` drops each decision's weakest candidate every few
epochs. At the end `decide` says how the arch is taken: `greedy` (the default) settles the
decisions one by one among all their remaining candidates by the supernet's validation metric,
`top2` settles each decision between its top two, `argmax` takes the weights' choice
(nas.strategies.darts_decide).
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas import cost
from nas.cost import KINDS as COST_KINDS
from nas.errors import ConfigError
from nas.space import LAYER_FIELDS, Arch, LayerArch, SearchSpace
from nas.metrics import task_loss
from nas.strategies.base import SearchContext, SearchResult, Strategy, check_numbers, check_wholes
from nas.strategies.darts_decide import SupernetJudge, compare_top_two, settle_in_turn, shrink
from nas.strategies.registry import STRATEGIES

# strategy.decide -> how the final arch is settled from the weights (None: their argmax alone)
DECIDE = {"greedy": settle_in_turn, "top2": compare_top_two, "argmax": None}


@STRATEGIES.register("darts")
class DartsStrategy(Strategy):
    """DARTS over every decision of the space.

    Args:
        arch_lr, arch_weight_decay: Adam on the architecture logits.
        second_order: the unrolled architecture gradient (DARTS eq. 7, finite differences)
            instead of the first-order approximation.
        warmup_epochs: epochs of weight-only training before architecture steps start.
        cost: None, or the cost to penalize: "params", "flops", "memory" or "latency", taken
            in expectation under the architecture distribution at the task's sequence length.
        cost_weight: the penalty's weight.
        cost_target: with a target, only the excess over it is penalized (relative to it);
            without, the expected cost relative to the largest arch's.
        seq_len: the sequence length at which cost is measured.
        partial: K of PC-DARTS: the attention candidates see max_heads / K heads (K=1: DARTS).
        edge_norm: with partial > 1, learn PC-DARTS edge weights (beta) next to the alphas.
        softmax_tau_start, softmax_tau_end: temperature of the softmax over the logits, annealed
            linearly over the epochs (a low final temperature sharpens the mixture; 1, 1: DARTS).
        entropy_weight: weight of the mean entropy of the decisions' distributions, minimized
            with the val loss (pushes each decision towards one choice).
        zero_one_weight: Fair DARTS's zero-one loss (https://arxiv.org/abs/1911.12126) on the
            probabilities: minus the mean of (p - 0.5)^2, which pushes every weight to 0 or 1.
        min_margin: the pipeline warns when the smallest winner-minus-runner-up margin of the
            final distribution is below this.
        shrink_every: E > 0: after every E epochs (past the warmup) each decision drops its
            least probable remaining candidate, down to `shrink_to`; a dropped candidate gets
            probability 0 and the supernet no longer runs it (0: off).
        shrink_to: the candidates a decision keeps at least when shrinking.
        decide: how the final arch is taken, judged by the supernet on the validation batches
            (metric, then loss, then cost; under a cost penalty, loss plus the arch's penalty,
            then cost): "greedy" settles the decisions one by one, each among
            all its remaining candidates with the decisions before it already settled (a
            coordinate search from the argmax arch); "top2" keeps a decision's runner-up instead
            of its winner when it scores better in the argmax arch; "argmax": the weights alone.
    """

    hard = False

    def __init__(self, space: SearchSpace, seed: int = 0, arch_lr: float = 3e-3,
                 arch_weight_decay: float = 1e-3, second_order: bool = False, warmup_epochs: int = 0,
                 cost: str | None = None, cost_weight: float = 0.0, cost_target: float | None = None,
                 seq_len: int | None = None, partial: int = 1, edge_norm: bool = True,
                 softmax_tau_start: float = 1.0, softmax_tau_end: float = 1.0, entropy_weight: float = 0.0,
                 zero_one_weight: float = 0.0, min_margin: float = 0.05, shrink_every: int = 0,
                 shrink_to: int = 1, decide: str = "greedy"):
        super().__init__(space, seed)
        if not isinstance(partial, int) or partial < 1 or space.max_heads % partial:
            raise ConfigError(f"strategy.partial={partial}: allowed: a divisor of max_heads ({space.max_heads})")
        check_numbers("positive", arch_lr=arch_lr, softmax_tau_start=softmax_tau_start,
                      softmax_tau_end=softmax_tau_end, cost_target=cost_target)
        check_numbers("non-negative", arch_weight_decay=arch_weight_decay, cost_weight=cost_weight,
                      entropy_weight=entropy_weight, zero_one_weight=zero_one_weight)
        check_numbers("probability", min_margin=min_margin)  # a difference of two probabilities
        check_wholes(0, warmup_epochs=warmup_epochs, shrink_every=shrink_every)
        check_wholes(1, shrink_to=shrink_to, seq_len=seq_len)
        if decide not in DECIDE:
            raise ConfigError(f"strategy.decide={decide}: allowed: {', '.join(DECIDE)}")
        self.shrink_every, self.shrink_to, self.decide = shrink_every, shrink_to, decide
        self.partial, self.edge_norm = partial, edge_norm and partial > 1
        self.softmax_tau_start, self.softmax_tau_end = softmax_tau_start, softmax_tau_end
        self.entropy_weight, self.zero_one_weight, self.min_margin = entropy_weight, zero_one_weight, min_margin
        self.register_buffer("softmax_tau", torch.tensor(float(softmax_tau_start)))  # this epoch's
        if cost is not None and cost not in COST_KINDS:
            raise ConfigError(f"strategy.cost: unknown cost '{cost}'; allowed: null, {', '.join(COST_KINDS)}")
        self.arch_lr, self.arch_weight_decay = arch_lr, arch_weight_decay
        self.second_order, self.warmup_epochs = second_order, warmup_epochs
        self.cost, self.cost_weight, self.cost_target, self.seq_len = cost, cost_weight, cost_target, seq_len
        self.alphas = nn.ParameterDict({
            _param_key(key): nn.Parameter(1e-3 * torch.randn(len(options)))
            for key, options in space.decisions().items()
        })
        # PC-DARTS edge logits: per layer (residual, mixed attention); absent for plain DARTS
        self.betas = nn.Parameter(torch.zeros(space.max_depth, 2)) if self.edge_norm else None
        self.history: list[dict[str, list[float]]] = []  # probabilities after each epoch
        if shrink_every:  # the remaining candidates, in state_dict so that a resumed search has them
            for key, options in space.decisions().items():
                self.register_buffer(_keep_key(key), torch.ones(len(options), dtype=torch.bool))
        self.shrunk: list[dict] = []  # one record per dropped candidate (darts_decide.shrink)
        self.comparison: dict[str, dict] = {}  # the final decision's scores per decision (greedy, top2)

    # -- the distribution ------------------------------------------------------------------
    def logits(self) -> dict[str, Tensor]:
        """Per decision its logits; -inf for candidates that shrinking dropped."""
        return {key: self.alphas[_param_key(key)].masked_fill(~keep, float("-inf")) if keep is not None
                else self.alphas[_param_key(key)] for key, keep in self.keep().items()}

    def keep(self) -> dict[str, Tensor | None]:
        """Per decision a bool mask of the candidates still in the search (None: not shrinking)."""
        return {key: getattr(self, _keep_key(key)) if self.shrink_every else None for key in self.space.decisions()}

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
        if self.cost is not None:
            if self.seq_len is None:
                raise ConfigError("a cost penalty needs seq_len (the task's sequence length)")
            self._build_cost_table(supernet)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        if not hasattr(self, "_arch_optimizer"):
            self._arch_optimizer = torch.optim.Adam(self.arch_parameters(), lr=self.arch_lr,
                                                    betas=(0.5, 0.999), weight_decay=self.arch_weight_decay)
        return [self._arch_optimizer]

    def loss(self, ctx: SearchContext, batch: dict, weights: dict[str, Tensor], detach: bool = False) -> Tensor:
        """The task loss under `weights`; detach: the weight step's, no gradient to the betas."""
        edges = self.edge_weights()
        if self.hard:
            logits = ctx.supernet.forward_mixed(batch["tokens"], weights, batch["mask"], hard=True)
        else:
            logits = ctx.supernet.forward_mixed(batch["tokens"], weights, batch["mask"], partial=self.partial,
                                                edges=None if edges is None else edges.detach() if detach else edges)
        return task_loss(logits, batch["target"])

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        logs = {}
        if val is not None and ctx.current_epoch >= self.warmup_epochs:
            if self.second_order:
                val_loss = self._second_order_step(ctx, train, val)
            else:
                val_loss = self.loss(ctx, val, self.mixture_weights(ctx))
                penalty = self.cost_penalty() + self.decisiveness_penalty()
                ctx.step(val_loss + penalty, optimizer_index=1)
                if self.cost is not None:
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
        d_alpha, d_weights = grads[: len(alphas)], grads[len(alphas):]
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
        penalty = self.cost_penalty() + self.decisiveness_penalty()
        penalty_grads = torch.autograd.grad(penalty, alphas, allow_unused=True) if penalty.requires_grad else [None] * len(alphas)
        for a, da, hp, hm, pg in zip(alphas, d_alpha, plus, minus, penalty_grads):
            a.grad = (0 if da is None else da) - xi * (hp - hm) / (2 * eps) + (0 if pg is None else pg)
        optimizer.step()
        return val_loss

    # -- cost ------------------------------------------------------------------------------
    def _build_cost_table(self, supernet) -> None:
        """Per layer choice (attention, heads, ffn) its cost; the expectation is then a sum."""
        space, shape = self.space, supernet.shape
        table = torch.zeros(len(space.attention), len(space.heads), len(space.ffn_dims))
        for (a, cand), (h, heads), (f, ffn) in itertools.product(
                enumerate(space.attention), enumerate(space.heads), enumerate(space.ffn_dims)):
            table[a, h, f] = cost.layer_cost(LayerArch(cand, heads, ffn), space, shape, self.seq_len, self.cost)
        self._layer_cost = table
        self._base_cost = cost.base_cost(space, shape, self.seq_len, self.cost)
        self._reference = self.cost_target or cost.arch_cost(space.largest(), space, shape, self.seq_len, self.cost)
        self._shape = shape

    def expected_cost(self) -> Tensor:
        probs = self.probabilities()
        layers = [torch.einsum("a,h,f,ahf->", *(probs[f"layer{i}.{f}"] for f in LAYER_FIELDS), self._layer_cost)
                  for i in range(self.space.max_depth)]
        if self.cost == "memory" and self.space.memory.reversible:
            # backward recomputes one layer at a time: the pair plus the largest of the first d
            # layers, whatever d (cost.arch_cost), not their sum
            prefix = torch.cummax(torch.stack(layers), 0).values + cost.reversible_pair_mib(self.space, self.seq_len)
        else:
            prefix = torch.cumsum(torch.stack(layers), 0)  # cost of the first d layers
        depth_cost = torch.stack([prefix[d - 1] for d in self.space.depths])
        return self._base_cost + (probs["depth"] * depth_cost).sum()

    def cost_penalty(self) -> Tensor:
        if self.cost is None or not self.cost_weight:
            return torch.zeros(())
        return self._weighted(self.expected_cost() / self._reference)

    def arch_penalty(self, arch: Arch) -> float:
        """The cost penalty of one arch: `cost_penalty` with all the probability on its choices."""
        relative = cost.arch_cost(arch, self.space, self._shape, self.seq_len, self.cost) / self._reference
        return float(self._weighted(torch.tensor(relative)))

    def _weighted(self, relative: Tensor) -> Tensor:
        """The penalty of a cost relative to the reference (the target, or the largest arch's)."""
        return self.cost_weight * (F.relu(relative - 1) if self.cost_target else relative)

    def decisiveness_penalty(self) -> Tensor:
        """Entropy and zero-one terms on the distributions (zero unless their weights are set)."""
        if not (self.entropy_weight or self.zero_one_weight):
            return torch.zeros(())
        probs = list(self.probabilities().values())
        entropy = torch.stack([-(p * torch.log(p.clamp_min(1e-12))).sum() for p in probs]).mean()
        zero_one = -torch.cat([(p - 0.5) ** 2 for p in probs]).mean()
        return self.entropy_weight * entropy + self.zero_one_weight * zero_one

    # -- state and logging -----------------------------------------------------------------
    def on_epoch_end(self, ctx: SearchContext) -> None:
        trained = ctx.current_epoch + 1 - self.warmup_epochs  # epochs with architecture steps
        if self.shrink_every and trained > 0 and trained % self.shrink_every == 0:
            events = shrink(self.probabilities(), self.keep(), self.shrink_to)
            self.shrunk += [{"epoch": ctx.current_epoch, **e} for e in events]
        probs = {k: [round(float(p), 4) for p in v.detach()] for k, v in self.probabilities().items()}
        self.history.append(probs)
        self.log_distribution(ctx, probs)
        for key, p in probs.items():  # winner minus runner-up, as nas.viz.margins
            top = sorted(p, reverse=True) + [0.0]
            ctx.log(f"arch/margin/{key}", top[0] - top[1])
        if not self.hard and ctx.max_epochs > 1:  # anneal the softmax temperature for the next epoch
            progress = min(1.0, (ctx.current_epoch + 1) / (ctx.max_epochs - 1))
            self.softmax_tau.fill_(self.softmax_tau_start + (self.softmax_tau_end - self.softmax_tau_start) * progress)

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """The arch `decide` settles: by the supernet's scores on `val_batches`, or the argmax."""
        settle = DECIDE[self.decide]
        if settle is None:
            return SearchResult(best=self.current_arch())
        space, shape = self.space, ctx.supernet.shape
        seq_len, kind = self.seq_len or shape.max_len, self.cost or "params"
        judge = SupernetJudge(ctx.supernet, val_batches, ctx.metric,
                              cost_of=lambda arch: cost.arch_cost(arch, space, shape, seq_len, kind),
                              penalty=self.arch_penalty if self.cost is not None and self.cost_weight else None)
        best, self.comparison = settle(judge, space, {k: v.detach() for k, v in self.probabilities().items()})
        return SearchResult(best=best)

    def get_extra_state(self) -> dict:
        return {**super().get_extra_state(), "history": self.history, "shrunk": self.shrunk}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.history = state["history"]
        self.shrunk = state.get("shrunk", [])  # checkpoints from before shrinking existed

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Resume across `shrink_every`: a checkpoint written without shrinking has dropped
        nothing (every candidate stays); one that dropped candidates needs shrinking on."""
        for key, options in self.space.decisions().items():
            name = prefix + _keep_key(key)
            if self.shrink_every and name not in state_dict:
                state_dict[name] = torch.ones(len(options), dtype=torch.bool)
            elif not self.shrink_every and name in state_dict:
                if not bool(state_dict[name].all()):
                    raise ConfigError(f"the checkpoint's search dropped candidates of {key} "
                                      "(strategy.shrink_every > 0): resume it with strategy.shrink_every > 0")
                del state_dict[name]  # nothing dropped yet: the same as not shrinking
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


@STRATEGIES.register("gdas")
class GdasStrategy(DartsStrategy):
    """GDAS: one hard Gumbel-softmax sample per decision per step, temperature annealed
    linearly from `tau_max` to `tau_min` over the epochs."""

    hard = True

    def __init__(self, space: SearchSpace, seed: int = 0, tau_max: float = 10.0, tau_min: float = 0.1, **kwargs):
        super().__init__(space, seed, **kwargs)
        check_numbers("positive", tau_max=tau_max, tau_min=tau_min)  # 0 divides the logits by zero
        if tau_min > tau_max:
            raise ConfigError(f"strategy.tau_min={tau_min!r} > strategy.tau_max={tau_max!r}: the temperature "
                              "is annealed from tau_max down to tau_min")
        self.tau_max, self.tau_min = tau_max, tau_min
        self.register_buffer("tau", torch.tensor(float(tau_max)))  # float: an int from the command line would round

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
        progress = min(1.0, (ctx.current_epoch + 1) / max(1, ctx.max_epochs - 1))
        self.tau.fill_(self.tau_max - (self.tau_max - self.tau_min) * progress)
        ctx.log("arch/tau", float(self.tau))




def _param_key(decision: str) -> str:
    return decision.replace(".", "_")  # ParameterDict keys may not hold dots


def _keep_key(decision: str) -> str:
    return f"keep_{_param_key(decision)}"  # a buffer name
