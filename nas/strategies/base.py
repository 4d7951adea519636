"""What every search strategy provides, and the search result they all return.

A strategy decides which paths of the supernet train at each step and which arch wins at the
end; the supernet, the task, the trainer and the logging are the same for all (NNI's split of
model space, strategy and evaluator). A strategy is an nn.Module so that its parameters
(architecture weights, a controller) and its extra state (RNG, history) live in `state_dict()`
and so in every Lightning checkpoint: a search resumes where it stopped.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from nas.space import Arch, SearchSpace


@dataclass
class Candidate:
    arch: Arch
    metrics: dict[str, float]  # e.g. {"val/acc": 0.9, "cost/params": 1e5}


@dataclass
class SearchResult:
    best: Arch
    ranked: list[Candidate] = field(default_factory=list)  # best first
    pareto: list[Candidate] = field(default_factory=list)  # non-dominated (metric vs cost), if any


class Strategy(nn.Module):
    """Base class. Subclasses override `training_step`, `current_arch` and maybe `finish`."""

    name: str  # set by the registry

    def __init__(self, space: SearchSpace, seed: int = 0):
        super().__init__()
        self.space = space
        self.rng = random.Random(seed)
        self.supernet = None  # set by attach(); not a submodule: the search module owns it
        self.counts: dict[str, dict[str, int]] = {}  # decision -> choice -> times trained

    def record(self, arch: Arch) -> Arch:
        """Count the choices of an arch whose weights train this step (shown in TensorBoard)."""
        for key, choice in self.space.choices_of(arch).items():
            per_choice = self.counts.setdefault(key, {})
            per_choice[str(choice)] = per_choice.get(str(choice), 0) + 1
        return arch

    def attach(self, supernet) -> None:
        """Called once by the search module, before the optimizers are made."""
        object.__setattr__(self, "supernet", supernet)  # a plain reference, not a child module

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of the strategy's own parameters (after the supernet's)."""
        return []

    def training_step(self, module, train: dict, val: dict | None) -> dict[str, Tensor]:
        """One step: train shared weights (and maybe architecture parameters). Returns logs."""
        raise NotImplementedError

    def current_arch(self) -> Arch:
        """The strategy's present best guess, validated after each epoch."""
        raise NotImplementedError

    def on_epoch_end(self, module) -> None:
        """Log the architecture distribution, anneal temperatures, ... (nothing by default)."""

    def finish(self, module, val_batches: list[dict]) -> SearchResult:
        """The final choice after supernet training (evolution and random search run here)."""
        return SearchResult(best=self.current_arch())

    def log_distribution(self, module, probabilities: dict[str, list[float]]) -> None:
        """Log one scalar per choice: `arch/<decision>/<choice>` (TensorBoard's scalars tab)."""
        decisions = self.space.decisions()
        for key, values in probabilities.items():
            for choice, p in zip(decisions[key], values):
                module.log(f"arch/{key}/{choice}", p)

    def get_extra_state(self) -> dict:
        return {"rng": self.rng.getstate(), "counts": self.counts}

    def set_extra_state(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.counts = state["counts"]
