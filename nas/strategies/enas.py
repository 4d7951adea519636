"""ENAS (Pham et al. 2018, https://arxiv.org/abs/1802.03268): an LSTM controller samples every
decision of the space in turn; the shared weights train on its samples, and the controller
learns by REINFORCE on the validation metric of its samples with inherited weights.
# a sampled archs, K decisions, H controller width, C choices of one decision
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.metrics import evaluate, score
from nas.results import SearchResult
from nas.space import Arch, SearchSpace
from nas.strategies.base import (
    NO_SETTING,
    SearchContext,
    SearchReport,
    SearchSetting,
    Strategy,
    check_numbers,
    check_wholes,
)
from nas.strategies.constraints import Constraints, check_constraints
from nas.strategies.registry import STRATEGIES
from nas.strategies.sampling import check_options, train_paths

MAX_DRAWS = 50  # under constraints, batches of controller samples tried for an arch within them


@dataclass
class Samples:
    """A batch of archs decoded by the controller, with what REINFORCE needs."""

    archs: list[Arch]
    log_prob: Tensor  # (a,) summed over the decisions each arch makes
    entropy: Tensor  # (a,) summed over every decision, used or not


@dataclass(frozen=True)
class EnasConfig:
    """ENAS's options (`strategy.*`)."""

    controller_hidden: int = 64  # width of the controller's LSTM cell and choice embeddings
    controller_lr: float = 3.5e-3  # Adam learning rate of the controller
    controller_every: int = 2  # a controller step after every this many weight steps
    controller_samples: int = 4  # archs sampled (and rewarded on the step's val batch) per controller step
    baseline_decay: float = 0.95  # decay of the moving-average reward baseline
    entropy_weight: float = 1e-3  # weight of the entropy bonus, which keeps the controller exploring
    tanh_constant: float | None = 2.5  # logits become c * tanh(logits) (ENAS), bounding how peaked a decision gets
    temperature: float | None = None  # logits are divided by it before the tanh (ENAS)
    final_samples: int = 16  # archs sampled at the end, ranked with the greedy one on the val batches
    warmup_epochs: int = 0  # epochs of weight training on samples before controller steps (early rewards are noise)
    sandwich: bool = False  # BigNAS's sandwich rule for the shared weights, as strategy=random's (sampling.py)
    distill: float = 0.0  # in-place distillation weight towards the largest arch (needs sandwich)
    constraints: dict[str, float] | None = None  # hard limits {cost kind: maximum} on the final pick

    def __post_init__(self):
        check_options(self.sandwich, self.distill)
        check_constraints(self.constraints)
        check_wholes(
            1,
            controller_hidden=self.controller_hidden,
            controller_every=self.controller_every,
            controller_samples=self.controller_samples,
        )
        check_wholes(0, final_samples=self.final_samples, warmup_epochs=self.warmup_epochs)
        check_numbers(
            "positive", controller_lr=self.controller_lr, tanh_constant=self.tanh_constant, temperature=self.temperature
        )
        check_numbers("non-negative", entropy_weight=self.entropy_weight)
        check_numbers("fraction", baseline_decay=self.baseline_decay)  # 1 would never move the baseline


@STRATEGIES.register("enas")
class EnasStrategy(Strategy):
    """ENAS over every decision of the space (`space.decisions()`, in order)."""

    Config = EnasConfig

    def __init__(
        self, space: SearchSpace, config: EnasConfig | None = None, setting: SearchSetting = NO_SETTING, seed: int = 0
    ):
        super().__init__(space, config, setting, seed)
        c = self.config
        self.sandwich, self.distill = c.sandwich, c.distill
        self.controller_lr, self.controller_every = c.controller_lr, c.controller_every
        self.controller_samples, self.baseline_decay = c.controller_samples, c.baseline_decay
        self.entropy_weight, self.tanh_constant, self.temperature = c.entropy_weight, c.tanh_constant, c.temperature
        self.final_samples, self.warmup_epochs = c.final_samples, c.warmup_epochs
        self.limits = Constraints(c.constraints, space, setting.seq_len)
        controller_hidden = c.controller_hidden
        self.decisions = space.decisions()
        self.keys = list(self.decisions)
        # the layer each decision belongs to; depth (-1) is always made
        self.layer_of = [-1 if key == "depth" else int(key.split(".")[0].removeprefix("layer")) for key in self.keys]
        self.cell = nn.LSTMCell(controller_hidden, controller_hidden)
        self.start = nn.Parameter(torch.empty(controller_hidden))  # the first input
        self.embeddings = nn.ModuleList(nn.Embedding(len(c), controller_hidden) for c in self.decisions.values())
        self.heads = nn.ModuleList(nn.Linear(controller_hidden, len(c)) for c in self.decisions.values())
        # Sampling draws from this generator only, on the CPU, so that a seed fixes the run on
        # any device and its state can be saved and restored with the rest of the strategy.
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # ENAS's init: near-uniform choices at the start
                p.copy_(torch.rand(p.shape, generator=self.generator) * 0.2 - 0.1)
        self.baseline: float | None = None  # the first rewards set it
        self.steps = 0  # weight steps so far, to schedule controller steps
        self.history: list[dict[str, list[float]]] = []  # after each epoch, as DARTS's (see on_epoch_end)

    # -- the controller --------------------------------------------------------------------
    def _logits(self, h: Tensor, k: int) -> Tensor:
        logits = self.heads[k](h)  # (a, C)
        if self.temperature is not None:
            logits = logits / self.temperature
        if self.tanh_constant is not None:
            logits = self.tanh_constant * torch.tanh(logits)
        return logits

    def _decode(self, batch: int, greedy: bool, forced: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run the controller over every decision in turn (with `forced` (a, K): feeding those
        picks instead of choosing, to score picks made elsewhere).

        Returns:
            The picks (a, K) and, per decision, the log-probabilities of its choices (a, C).
        """
        x = self.start.expand(batch, -1)  # (a, H)
        state, picks, log_probs = None, [], []
        for k in range(len(self.keys)):
            state = self.cell(x, state)
            log_p = F.log_softmax(self._logits(state[0], k), -1)  # (a, C)
            if forced is not None:
                pick = forced[:, k].to(log_p.device)  # (a,)
            elif greedy:
                pick = log_p.argmax(-1)  # (a,)
            else:
                pick = torch.multinomial(log_p.detach().exp().cpu(), 1, generator=self.generator)
                pick = pick.squeeze(1).to(log_p.device)  # (a,)
            picks.append(pick)
            log_probs.append(log_p)
            x = self.embeddings[k](pick)  # (a, H): the choice made is the next input
        return torch.stack(picks, 1), log_probs

    def _archs(self, picks: Tensor) -> list[Arch]:
        return [
            self.space.arch_from_choices({key: self.decisions[key][int(i)] for key, i in zip(self.keys, row)})
            for row in picks
        ]

    def _used(self, archs: list[Arch]) -> Tensor:
        """(a, K) mask of the decisions each arch makes: depth and the layers it keeps."""
        return torch.tensor([[i < arch.depth for i in self.layer_of] for arch in archs])

    def sample(self, batch: int = 1, ctx: SearchContext | None = None) -> Samples:
        """`batch` archs from the controller, with gradients to its parameters; with `ctx`,
        rank 0's picks on every rank (scored by each rank's own controller, which DDP keeps equal).

        Only the decisions an arch makes count in its log-probability: the picks of layers past
        its depth do not change the reward, so their score-function terms would add variance
        and no signal. The entropy covers every decision, to keep the unused layers exploring
        too (it is computed from the full distributions, not from the picks, so it adds little
        variance).
        """
        picks, log_probs = self._decode(batch, greedy=False)
        if ctx is not None:
            agreed = ctx.agree(picks.cpu())  # (a, K)
            if not torch.equal(agreed, picks.cpu()):  # another rank's picks: score them here
                picks, log_probs = self._decode(batch, greedy=False, forced=agreed)
        archs = self._archs(picks)
        picked = torch.stack([lp.gather(1, p[:, None]).squeeze(1) for lp, p in zip(log_probs, picks.T)], 1)  # (a, K)
        entropy = torch.stack([-(lp.exp() * lp).sum(-1) for lp in log_probs], 1)  # (a, K)
        used = self._used(archs).to(picked.device)  # (a, K)
        return Samples(archs, (picked * used).sum(1), entropy.sum(1))

    @torch.no_grad()
    def current_arch(self) -> Arch:
        """The controller's greedy decode: the most likely choice of each decision in turn."""
        return self._archs(self._decode(1, greedy=True)[0])[0]

    # -- training --------------------------------------------------------------------------
    def attach(self, supernet) -> None:
        super().attach(supernet)
        self.limits.attach(supernet.shape)  # an impossible limit fails before training

    def optimizers(self) -> list[torch.optim.Optimizer]:
        if not hasattr(self, "_controller_optimizer"):
            self._controller_optimizer = torch.optim.Adam(self.parameters(), lr=self.controller_lr)
        return [self._controller_optimizer]

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        with torch.no_grad():
            arch = self.record(self.sample(1, ctx).archs[0])
        logs = train_paths(ctx, train, [arch], self.space, self.sandwich, self.distill)
        self.steps += 1
        if val is not None and ctx.current_epoch >= self.warmup_epochs and self.steps % self.controller_every == 0:
            samples = self.sample(self.controller_samples, ctx)
            rewards = torch.tensor(
                [score(evaluate(ctx.supernet, [val], ctx.metric, arch=a), ctx.metric) for a in samples.archs]
            )
            ctx.step(self.reinforce_loss(samples, rewards), optimizer_index=1)
            logs["reward"] = rewards.mean()
        return logs

    def reinforce_loss(self, samples: Samples, rewards: Tensor) -> Tensor:
        """REINFORCE with a moving-average baseline and an entropy bonus; updates the baseline.

        Args:
            samples: archs from `sample()`, with their log-probabilities attached to the graph.
            rewards: (a,) the reward of each arch, higher is better.
        """
        rewards = rewards.to(samples.log_prob.device, samples.log_prob.dtype)
        # The advantage uses the baseline from before these rewards, so it stays unbiased.
        baseline = float(rewards.mean()) if self.baseline is None else self.baseline
        advantage = rewards - baseline  # (a,)
        self.baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * float(rewards.mean())
        return -(advantage * samples.log_prob).mean() - self.entropy_weight * samples.entropy.mean()

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        with torch.no_grad():
            sampled = self.sample(self.final_samples).archs if self.final_samples else []
        archs = list(dict.fromkeys([self.current_arch(), *sampled]))
        if self.limits:
            archs = self._feasible(ctx, archs)
        ranked = self.rank_archs(ctx, archs, val_batches)
        self.evidence = self.test_pick(ctx, ranked, val_batches)
        return SearchResult(best=ranked[0].arch, ranked=ranked)

    @torch.no_grad()
    def _feasible(self, ctx: SearchContext, archs: list[Arch]) -> list[Arch]:
        """The archs within the constraints; none: up to MAX_DRAWS batches of `final_samples`
        (at least 16) more controller samples, then the cheapest archs within them; still none: one line."""
        self.limits.attach(ctx.supernet.shape)
        kept = [arch for arch in archs if self.limits.feasible(arch)]
        batch, draws = max(self.final_samples, 16), 0
        while not kept and draws < MAX_DRAWS:
            kept = [arch for arch in dict.fromkeys(self.sample(batch).archs) if self.limits.feasible(arch)]
            draws += 1
        kept = kept or self.limits.cheapest_feasible()
        if not kept:
            raise self.limits.refusal(f"none of the controller's {MAX_DRAWS * batch + len(archs)} samples")
        return kept

    # -- state and logging -----------------------------------------------------------------
    @torch.no_grad()
    def on_epoch_end(self, ctx: SearchContext) -> None:
        # An LSTM controller has no per-decision marginals: what is recorded is each decision's
        # distribution along the greedy decode, the one the greedy arch was picked from.
        _, log_probs = self._decode(1, greedy=True)
        self.history.append({key: [round(float(p), 4) for p in lp[0].exp()] for key, lp in zip(self.keys, log_probs)})
        ctx.log("controller/entropy", float(sum(-(lp.exp() * lp).sum() for lp in log_probs)))
        if self.baseline is not None:
            ctx.log("controller/baseline", self.baseline)
        self.log_distribution(ctx, self.history[-1])

    def report(self) -> SearchReport:
        return SearchReport.of(self.history, evidence=self.evidence)

    def get_extra_state(self) -> dict:
        return {
            **super().get_extra_state(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "steps": self.steps,
            "history": self.history,
        }

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.generator.set_state(state["generator"])
        self.baseline, self.steps, self.history = state["baseline"], state["steps"], state["history"]
