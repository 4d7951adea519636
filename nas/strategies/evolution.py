"""SPOS supernet training, then an evolutionary search over it: NSGA-II (Deb et al. 2002,
https://doi.org/10.1109/4235.996017) with Optuna, trading the validation metric with inherited
weights against a cost from `nas.cost`, under hard cost constraints (as in SPOS and HAT).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import optuna
from optuna.trial import Trial, TrialState

from nas.errors import ConfigError
from nas.metrics import HIGHER_IS_BETTER, evaluate_with_loss
from nas.results import Candidate, SearchResult, best_first, pareto_front
from nas.space import Arch, SearchSpace
from nas.strategies.base import (
    NO_SETTING,
    SearchContext,
    SearchSetting,
    check_numbers,
    check_wholes,
)
from nas.strategies.constraints import Constraints, check_constraints
from nas.strategies.penalties import CostPenalty, PenaltyConfig, check_kind
from nas.strategies.registry import STRATEGIES
from nas.strategies.single_path import SinglePathConfig, SinglePathStrategy
from nas.strategies.study import SharedStudy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvolutionConfig(SinglePathConfig):
    """Evolution's options (`strategy.*`): SPOS training's, then NSGA-II's.

    The study lives in the storage group's URL (an SQLite file in the run folder by default), so
    a search resumes and several workers can share it: run the same command with other seeds."""

    population: int = 16  # NSGA-II population size; the first generation is random
    generations: int = 4  # trials = population * generations; a resumed study may be given more
    mutation_prob: float | None = None  # per-decision mutation probability (None: 1 / number of decisions)
    crossover_prob: float = 0.9  # probability that a child comes from crossover rather than one parent
    cost: str = "params"  # the second objective: params | flops | memory (activation MiB) | latency (ms)
    constraints: dict[str, float] | None = None  # hard limits {cost kind: maximum}, e.g. {params: 2e5, exact_layers: 1}
    study_name: str = "evolution"  # the study in the storage; a storage may hold several
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats
    grace_period: int | None = None  # seconds of silence after which a trial is run again (None: 2 intervals)

    def __post_init__(self):
        super().__post_init__()
        check_kind(self.cost, "cost")
        check_constraints(self.constraints)
        check_wholes(2, population=self.population)
        check_wholes(1, generations=self.generations)
        check_numbers("probability", mutation_prob=self.mutation_prob, crossover_prob=self.crossover_prob)


@STRATEGIES.register("evolution")
class EvolutionStrategy(SinglePathStrategy):
    """SPOS training (inherited), then NSGA-II over archs evaluated with inherited weights.

    Two objectives: the validation metric (its own direction) and `cost` (minimized). The study
    lives in an Optuna storage, so a search resumes (the same call runs only the missing trials)
    and several workers can share it; all of them return the same result, made from every
    complete trial of the study. A study belongs to one trained supernet (its trials' values
    came from those weights) and one search: continuing a study with another space, metric,
    cost, seq_len, constraints or population is refused; after retraining, use a new study_name.
    Constraints reach NSGA-II through `Trial.set_constraint` (Optuna 5's replacement for the
    deprecated `constraints_func`): a trial is feasible when every cost is within its limit. The
    cheapest arch of each constrained kind is enqueued first, so some trial is feasible.

    Workers: one per process, each with its own `seed` (with the same seed, workers would
    propose the same first generation); `SharedStudy` (study.py) opens the storage (the
    setting's: "sqlite:///<file>", "postgresql://...", "journal:<file>", or None in memory),
    checked when the strategy is made and reached when it is attached, before training; it lets
    workers ask only while the study lacks trials (it ends with exactly `population *
    generations` complete ones) and runs the trials of killed workers again.
    """

    Config = EvolutionConfig

    def __init__(
        self,
        space: SearchSpace,
        config: EvolutionConfig | None = None,
        setting: SearchSetting = NO_SETTING,
        seed: int = 0,
    ):
        super().__init__(space, config, setting, seed)
        c = self.config
        self.population, self.generations, self.cost = c.population, c.generations, c.cost
        self.constraints = {k: float(v) for k, v in (c.constraints or {}).items()}
        self.study_name = c.study_name
        self.costs = CostPenalty(PenaltyConfig(), space, setting.seq_len)  # every use names its kind
        self.limits = Constraints(self.constraints, space, setting.seq_len)
        self.workers = SharedStudy(setting.storage, c.heartbeat_interval, c.grace_period)

    @property
    def total_trials(self) -> int:
        return self.population * self.generations

    # -- costs -----------------------------------------------------------------------------
    def attach(self, supernet) -> None:
        super().attach(supernet)
        self.costs.attach(supernet.shape)
        self.limits.attach(supernet.shape)  # fail before hours of supernet training, not after
        self.workers.check()

    # -- the search ------------------------------------------------------------------------
    def finish(self, ctx: SearchContext, val_batches: list[dict]) -> SearchResult:
        """Run the trials the study still lacks, then choose from all its complete trials.

        Args:
            ctx: the search: its `supernet` (trained), `metric` and `log_metrics`.
            val_batches: the batches every arch is evaluated on.

        Returns:
            `best`, the feasible arch with the best metric (ties: the lower loss, then the cheaper); `ranked`,
            the distinct feasible archs, best first; `pareto`, the non-dominated ones (metric vs
            cost), cheapest first. Each candidate's metrics hold `val/<metric>` and `cost/<kind>`.
            The best is tested against the second best on `val_batches` (`test_pick`).
        """
        metric = ctx.metric
        seed = self.rng.randrange(2**32)

        def sampler(done: int) -> optuna.samplers.NSGAIISampler:
            # A sampler seeded afresh for each ask from the number of complete trials: what it
            # proposes then depends on the study alone, so a search interrupted and resumed
            # proposes what an uninterrupted one does (one sampler's RNG would restart at the resume).
            return optuna.samplers.NSGAIISampler(
                population_size=self.population,
                mutation_prob=self.config.mutation_prob,
                crossover_prob=self.config.crossover_prob,
                seed=(seed + done) % 2**32,
            )

        directions = ["maximize" if HIGHER_IS_BETTER[metric] else "minimize", "minimize"]
        study = self.workers.load(self.study_name, sampler(0), directions, lambda s: self._claim(s, metric))
        logged = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) // self.population
        known: dict[Arch, tuple[float, float | None]] = {}  # arch -> (metric, loss)
        while (trial := self.workers.ask(study, self.total_trials, self._suggest, sampler)) is not None:
            with self.workers.running(study, trial):
                self._run(study, trial, ctx.supernet, val_batches, metric, known)
            logged = self._report(study, ctx, metric, logged)
        result = self._result(study, metric)
        self.evidence = self.test_pick(ctx, result.ranked, val_batches)
        return result

    def _claim(self, study: optuna.Study, metric: str) -> None:
        """Mark a new study with what it searches; refuse to continue a study of another search."""
        search = json.loads(
            json.dumps(
                {
                    "space": self.space.to_dict(),
                    "metric": metric,
                    "cost": self.cost,
                    "seq_len": self.costs.seq_len,
                    "constraints": self.constraints,
                    "population": self.population,
                }
            )
        )
        if "search" not in study.user_attrs:
            study.set_user_attr("search", search)
            for kind in self.constraints:
                study.enqueue_trial(self.costs.cheapest(kind)[0])
            return
        differ = [key for key, value in search.items() if study.user_attrs["search"].get(key) != value]
        if differ:
            raise ConfigError(
                f"study '{self.study_name}' in {self.workers} belongs to another search "
                f"(its {', '.join(differ)} differ); give another study_name or storage"
            )

    def _suggest(self, trial: Trial) -> None:
        for key, options in self.space.decisions().items():  # every layer: a fixed parameter space
            trial.suggest_categorical(key, options)

    def _run(
        self,
        study: optuna.Study,
        trial: Trial,
        supernet,
        val_batches: list[dict],
        metric: str,
        known: dict[Arch, tuple[float, float | None]],
    ) -> None:
        """Evaluate one trial's arch and tell. An arch is evaluated once: NSGA-II proposes the same
        one again, and every worker evaluates the same supernet weights, so a value found for an
        arch (here or in another worker's complete trial) stands for that arch."""
        arch = self.space.arch_from_choices(trial.params)
        if arch not in known:
            known.update(
                (self.space.arch_from_choices(t.params), (t.values[0], t.user_attrs.get("val/loss")))
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            )
        if arch not in known:
            known[arch] = evaluate_with_loss(supernet, val_batches, metric, arch=arch)
        value, loss = known[arch]
        if loss is not None:  # the tie-break after the metric (results.best_first)
            trial.set_user_attr("val/loss", loss)
        spent = {kind: self.costs.of(arch, kind) for kind in dict.fromkeys([self.cost, *self.constraints])}
        for kind, amount in spent.items():  # not `value`: that is the metric told below
            trial.set_user_attr(f"cost/{kind}", amount)
        for kind, limit in self.constraints.items():
            trial.set_constraint(kind, spent[kind] - limit)  # feasible when <= 0
        study.tell(trial, [value, spent[self.cost]])

    # -- the result ------------------------------------------------------------------------
    def _candidates(self, study: optuna.Study, metric: str) -> list[Candidate]:
        """The distinct feasible archs of the complete trials, best metric first (ties: lower loss, then cheaper)."""
        found: dict[Arch, Candidate | None] = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            arch = self.space.arch_from_choices(trial.params)
            if arch in found:
                continue
            feasible = all(value <= 0 for value in trial.constraints.values())
            measured = {k: v for k, v in trial.user_attrs.items() if k.startswith(("cost/", "val/"))}
            found[arch] = Candidate(arch, {f"val/{metric}": trial.values[0], **measured}) if feasible else None
        return best_first([c for c in found.values() if c is not None], metric, f"cost/{self.cost}")

    def _pareto(self, ranked: list[Candidate], metric: str) -> list[Candidate]:
        """The non-dominated candidates, cheapest first (so the metric improves along the list)."""
        return pareto_front(ranked, f"val/{metric}", f"cost/{self.cost}", HIGHER_IS_BETTER[metric])

    def _cost(self, candidate: Candidate) -> float:
        return candidate.metrics[f"cost/{self.cost}"]

    def _result(self, study: optuna.Study, metric: str) -> SearchResult:
        ranked = self._candidates(study, metric)
        if not ranked:
            limits = ", ".join(f"{k} <= {v:g}" for k, v in self.constraints.items())
            raise ConfigError(
                f"none of the {self.total_trials} trials meets the constraints ({limits}); "
                "loosen them or run more generations"
            )
        return SearchResult(best=ranked[0].arch, ranked=ranked, pareto=self._pareto(ranked, metric))

    def _report(self, study: optuna.Study, ctx: SearchContext, metric: str, logged: int) -> int:
        """One log line per finished generation; returns the last generation logged."""
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done // self.population <= logged:
            return logged
        ranked = self._candidates(study, metric)
        if ranked:
            best, front = ranked[0], self._pareto(ranked, metric)
            log.info(
                "evolution: generation %d/%d (%d trials): best val/%s %.4g at %s %.4g; Pareto front of %d",
                done // self.population,
                self.generations,
                done,
                metric,
                best.metrics[f"val/{metric}"],
                self.cost,
                self._cost(best),
                len(front),
            )
            ctx.log_metrics(
                {"search/best_val": best.metrics[f"val/{metric}"], "search/pareto_size": len(front)}, step=done
            )
        else:
            log.info(
                "evolution: generation %d/%d (%d trials): none feasible yet",
                done // self.population,
                self.generations,
                done,
            )
        return done // self.population
