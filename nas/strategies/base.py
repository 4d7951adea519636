"""What every search strategy provides, and the context (`SearchContext`) it is handed.

A strategy decides which paths of the supernet train at each step and which arch wins at the
end; the supernet, the task, the trainer and the logging are the same for all (NNI's split of
model space, strategy and evaluator). A strategy is an nn.Module so that its parameters
(architecture weights, a controller) and its extra state (RNG, history) live in `state_dict()`
and so in every Lightning checkpoint: a search resumes where it stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from nas import cost
from nas.errors import build_config, check_number, check_whole
from nas.evidence import Separation, separate
from nas.metrics import HIGHER_IS_BETTER, evaluate_items, evaluate_with_loss
from nas.model import ModelSpec
from nas.results import Candidate, SearchResult, best_first
from nas.space import Arch, SearchSpace
from nas.supernet import Supernet
from nas.viz import margins

__all__ = [
    "Candidate",
    "SearchContext",
    "SearchReport",
    "SearchResult",
    "SearchSetting",
    "Strategy",
    "build_strategy",
    "check_numbers",
    "check_wholes",
]


def check_numbers(kind: str, **options: float | None) -> None:
    """`errors.check_number` of `kind` on each option of a config, named as in the config
    (`build_config` puts the path in front). None passes: it turns an option off where its
    type allows it, and the type check refuses it elsewhere."""
    for name, value in options.items():
        if value is not None:
            check_number(value, name, kind)


def check_wholes(least: int, **options: int | None) -> None:
    """`errors.check_whole` (a whole number >= least) on each option, as `check_numbers`."""
    for name, value in options.items():
        if value is not None:
            check_whole(value, name, least)


@dataclass(frozen=True)
class SearchSetting:
    """What the search supplies to a strategy besides its options."""

    seq_len: int | None = None  # the task's sequence length, at which costs are taken (None: the model's maximum)
    storage: str | None = None  # the Optuna storage URL (configs/storage); None: in memory
    run_dir: str | None = None  # the run folder


NO_SETTING = SearchSetting()  # a strategy made outside a search (tests, scripts)


@dataclass(frozen=True)
class SearchReport:
    """What a strategy says it decided and how sure it is: what the pipeline writes (margins.yaml,
    summary.txt, the warning) and TensorBoard shows. Empty for strategies without weights."""

    history: tuple[dict[str, list[float]], ...] = ()  # architecture probabilities after each epoch
    margins: dict[str, float] = field(default_factory=dict)  # per decision, final winner minus runner-up
    comparisons: dict[str, dict] = field(default_factory=dict)  # the decide rule's scores per decision
    shrunk: tuple[dict, ...] = ()  # one record per candidate dropped by shrinking
    min_margin: float | None = None  # a smaller margin than this means the search did not decide
    evidence: tuple[Separation, ...] = ()  # per decision of the final comparison, the paired test of
    # its winner against its runner-up on the validation items (nas.evidence)

    @classmethod
    def of(cls, history: list[dict[str, list[float]]], **rest) -> SearchReport:
        """A report of an architecture-weight history, its margins those of the last epoch."""
        return cls(history=tuple(history), margins=margins(history[-1]) if history else {}, **rest)


class SearchContext(Protocol):
    """What a strategy may use of the search it runs in (the Lightning `SearchModule` implements
    it; tests can hand a small stand-in). Strategies never see Lightning itself."""

    supernet: Supernet  # the shared weights being trained
    metric: str  # the task's metric, "acc" or "bpb"

    @property
    def current_epoch(self) -> int:
        """The epoch in progress, from 0."""

    @property
    def max_epochs(self) -> int:
        """The epochs the search trains for."""

    def arch_loss(self, batch: dict, arch: Arch) -> tuple[Tensor, Tensor]:
        """(loss, logits) of one arch of the supernet on a batch."""

    def step(self, loss: Tensor, optimizer_index: int = 0) -> None:
        """Backward `loss` and step one optimizer (0: the supernet's weights, then the
        strategy's own `optimizers()` in order)."""

    def optimizer(self, index: int = 0) -> torch.optim.Optimizer:
        """One of the optimizers `step` uses, by the same index."""

    def log(self, name: str, value: float | Tensor) -> None:
        """Log one scalar at the current step (TensorBoard's scalars)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Write scalars at an explicit step, also after training (evolution's generations)."""

    def agree(self, value):
        """Rank 0's `value` on every rank (any picklable object: an arch, choice indices,
        Gumbel noise); `value` itself without a process group.

        Under DDP every rank must train the same path each step, whatever its seed or RNG use:
        a strategy passes each random decision through here. Every rank must call it the same
        number of times (it is a collective); `finish` runs on rank 0 alone and must not call it.
        """


class Strategy(nn.Module):
    """Base class. Subclasses override `training_step`, `current_arch` and maybe `finish`."""

    name: str  # set by the registry

    @dataclass(frozen=True)
    class Config:
        """The strategy's options (`strategy.<option>`); each subclass declares its own."""

    def __init__(
        self, space: SearchSpace, config: Config | None = None, setting: SearchSetting = NO_SETTING, seed: int = 0
    ):
        super().__init__()
        self.space = space
        self.config = config if config is not None else self.Config()
        self.setting = setting
        self.rng = random.Random(seed)
        self.supernet = None  # set by attach(); not a submodule: the search module owns it
        self.counts: dict[str, dict[str, int]] = {}  # decision -> choice -> times trained
        self.evidence: tuple[Separation, ...] = ()  # the final comparison's paired tests, set by `finish`

    def record(self, arch: Arch) -> Arch:
        """Count the choices of an arch whose weights train this step (shown in TensorBoard)."""
        for key, choice in self.space.choices_of(arch).items():
            per_choice = self.counts.setdefault(key, {})
            per_choice[str(choice)] = per_choice.get(str(choice), 0) + 1
        return arch

    def attach(self, supernet: Supernet) -> None:
        """Called once by the search module, before the optimizers are made."""
        object.__setattr__(self, "supernet", supernet)  # a plain reference, not a child module

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of the strategy's own parameters (after the supernet's)."""
        return []

    def training_step(self, ctx: SearchContext, train: dict, val: dict | None) -> dict[str, Tensor]:
        """One step: train shared weights (and maybe architecture parameters). Returns logs."""
        raise NotImplementedError

    def current_arch(self) -> Arch:
        """The strategy's present best guess, validated after each epoch."""
        raise NotImplementedError

    def on_epoch_end(self, ctx: SearchContext) -> None:
        """Log the architecture distribution, anneal temperatures, ... (nothing by default)."""

    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """The final choice after supernet training (evolution and random search run here)."""
        return SearchResult(best=self.current_arch())

    def report(self) -> SearchReport:
        """What the strategy decided and how sure it is (after `finish`): by default the paired
        test of its final pick, if it made one among candidates."""
        return SearchReport(evidence=self.evidence)

    def rank_archs(self, ctx: SearchContext, archs: list[Arch], val_batches: list[dict]) -> list[Candidate]:
        """`archs` scored with the supernet's weights, best first; ties in the metric go to the
        lower validation loss, then to fewer parameters (`results.best_first`)."""
        metric, net = ctx.metric, ctx.supernet
        candidates = []
        for arch in archs:
            value, loss = evaluate_with_loss(net, val_batches, metric, arch=arch)
            params = cost.params(ModelSpec(arch, net.space, net.shape))  # exact, without extracting a copy
            candidates.append(Candidate(arch, {f"val/{metric}": value, "val/loss": loss, "cost/params": params}))
        return best_first(candidates, metric)

    def test_pick(self, ctx: SearchContext, ranked: list[Candidate], val_batches: list[dict]) -> tuple[Separation, ...]:
        """The final pick among whole archs as a decision: the first of `ranked` against the second,
        both scored again item by item on `val_batches` (their ranking may come from a study's
        storage) and compared by a paired test (`nas.evidence.separate`); () with fewer than two."""
        if len(ranked) < 2:
            return ()
        first, second = ranked[0].arch, ranked[1].arch
        items = [evaluate_items(ctx.supernet, val_batches, ctx.metric, arch=a)[2] for a in (first, second)]
        winner, runner_up = differences(self.space, first, second)
        return (separate(f"pick of {len(ranked)}", winner, runner_up, *items, HIGHER_IS_BETTER[ctx.metric]),)

    def log_distribution(self, ctx: SearchContext, probabilities: dict[str, list[float]]) -> None:
        """Log one scalar per choice: `arch/<decision>/<choice>` (TensorBoard's scalars tab)."""
        decisions = self.space.decisions()
        for key, values in probabilities.items():
            for choice, p in zip(decisions[key], values):
                ctx.log(f"arch/{key}/{choice}", p)

    def get_extra_state(self) -> dict:
        return {"rng": self.rng.getstate(), "counts": self.counts}

    def set_extra_state(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.counts = state["counts"]


def differences(space: SearchSpace, arch: Arch, other: Arch, most: int = 3) -> tuple[str, str]:
    """The choices in which two archs differ, as text for each (`depth=2 layer1.attention=full`),
    at most `most` of them and then how many more."""
    mine, theirs = space.choices_of(arch), space.choices_of(other)
    keys = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
    more = f" (+{len(keys) - most} more)" if len(keys) > most else ""

    def text(choices: dict) -> str:
        return " ".join(f"{k}={choices.get(k, '-')}" for k in keys[:most]) + more

    return text(mine), text(theirs)


def build_strategy(
    cls: type[Strategy], space: SearchSpace, options: dict[str, Any], setting: SearchSetting = NO_SETTING, seed: int = 0
) -> Strategy:
    """`cls` with options read from a config (nested mappings for its parts, e.g.
    {"penalty": {"cost": "flops"}}): an unknown option, a missing one, a value of the wrong type
    or out of range stops with one ConfigError line naming `strategy.<option>` (`build_config`)."""
    return cls(space, build_config(cls.Config, options, f"strategy={cls.name}", "strategy"), setting, seed)
