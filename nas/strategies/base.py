"""What every search strategy provides, and the context (`SearchContext`) it is handed.

A strategy decides which paths of the supernet train at each step and which arch wins at the
end; the supernet, the task, the trainer and the logging are the same for all (NNI's split of
model space, strategy and evaluator). A strategy is an nn.Module so that its parameters
(architecture weights, a controller) and its extra state (RNG, history) live in `state_dict()`
and so in every Lightning checkpoint: a search resumes where it stopped.
"""
from __future__ import annotations

import inspect
import random
import typing
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from nas import cost
from nas.errors import ConfigError, check_number, check_whole, excerpt, fits, type_name
from nas.model import ModelSpec
from nas.metrics import evaluate_with_loss
from nas.results import Candidate, SearchResult, best_first
from nas.space import Arch, SearchSpace
from nas.supernet import Supernet

__all__ = ["Candidate", "SearchContext", "SearchResult", "Strategy", "check_numbers", "check_wholes"]


def check_numbers(kind: str, **options: float | None) -> None:
    """`errors.check_number` of `kind` on each option, named `strategy.<option>`. None passes: it
    turns an option off where its type allows it, and `Strategy.build` refuses it elsewhere."""
    for name, value in options.items():
        if value is not None:
            check_number(value, f"strategy.{name}", kind)


def check_wholes(least: int, **options: int | None) -> None:
    """`errors.check_whole` (a whole number >= least) on each option, as `check_numbers`."""
    for name, value in options.items():
        if value is not None:
            check_whole(value, f"strategy.{name}", least)


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

    def __init__(self, space: SearchSpace, seed: int = 0):
        super().__init__()
        self.space = space
        self.rng = random.Random(seed)
        self.supernet = None  # set by attach(); not a submodule: the search module owns it
        self.counts: dict[str, dict[str, int]] = {}  # decision -> choice -> times trained

    @classmethod
    def build(cls, space: SearchSpace, options: dict[str, Any], seed: int = 0) -> Strategy:
        """`cls(space, seed, **options)` for options read from a config. An unknown option, a missing
        one or a value of the wrong type stops with one ConfigError line naming `strategy.<option>`,
        before the constructor runs; the constructor's own checks then refuse values out of range."""
        accepted = cls.options()
        unknown = [name for name in options if name not in accepted]
        if unknown:
            raise ConfigError(f"unknown option strategy.{unknown[0]} for strategy={cls.name}; "
                              f"allowed: {', '.join(accepted)}")
        for name, (hint, default) in accepted.items():
            value = options.get(name, default)
            if value is inspect.Parameter.empty or (isinstance(value, str) and value == "???"):  # Hydra's "to give"
                raise ConfigError(f"strategy.{name} is missing: strategy={cls.name} needs it; "
                                  f"pass strategy.{name}=<value>")
            if not fits(value, hint):
                raise ConfigError(f"strategy.{name}={excerpt(value)}: must be {type_name(hint)}")
        return cls(space, seed=seed, **options)

    @classmethod
    def options(cls) -> dict[str, tuple[Any, Any]]:
        """Every option of the constructor as name -> (annotation, default), the options that its
        `**kwargs` hands to a base class's constructor included (space and seed are not options)."""
        found: dict[str, tuple[Any, Any]] = {}
        for klass in cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            init = vars(klass)["__init__"]
            hints, parameters = typing.get_type_hints(init), inspect.signature(init).parameters
            for name, p in parameters.items():
                if name not in ("self", "space", "seed") and p.kind is p.POSITIONAL_OR_KEYWORD:
                    found.setdefault(name, (hints.get(name, Any), p.default))
            if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                break
        return found

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
