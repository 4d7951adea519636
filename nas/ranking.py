"""How faithfully a supernet ranks architectures: the arch sample, the rank statistics, the files.

Inherited-weight scores against standalone training, as measured in "Evaluating the search phase
of NAS" (Yu et al. 2020, https://arxiv.org/abs/1902.08142) and NAS-Bench-201's Kendall tau:
Kendall tau-b and Spearman rho from SciPy (ties handled as SciPy does), top-k overlap, the
regret of the arch the supernet would pick, tau among the standalone-best archs, the free
baselines' tau and regret, and ensembles of supernets. Pure functions: no training happens here.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from scipy import stats

from nas.atomic import atomic_path, atomic_write
from nas.errors import ConfigError
from nas.results import best_first_order
from nas.safe_load import parse_json, read_text, read_yaml
from nas.space import Arch, LayerArch, SearchSpace


# -- which archs to rank ---------------------------------------------------------------------
def stratified_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """`n` distinct archs such that every attention type appears at every depth.

    A (depth, attention type) pair is a cell. The first `types x depths` archs fill one cell
    each with a pure arch: every layer uses the cell's type, heads and FFN widths are sampled
    per layer; so each type appears at every allowed depth and at every layer index. Cells are
    taken least-used type and depth first, so with n < types x depths the first
    max(types, depths) archs still cover every type and every depth (not every pair). Archs past
    one round are mixed: the cell's depth, the cell's type at one random layer, the rest uniform.

    Args:
        space: the search space.
        n: how many archs; at most the space's number of distinct archs.
        seed: the same seed gives the same list.

    Returns:
        `n` distinct archs, in the order picked.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"archs: expected a positive number of archs; got {n!r}")
    if n > space.size():
        raise ConfigError(f"archs: {n} exceeds the {space.size()} distinct archs of space '{space.name}'")
    rng = random.Random(seed)
    types, depths = list(space.attention), list(space.depths)
    type_uses, depth_uses = dict.fromkeys(types, 0), dict.fromkeys(depths, 0)
    cells: list[tuple[int, str]] = []
    remaining = [(d, t) for d in depths for t in types]
    while len(cells) < n:
        if not remaining:
            remaining = [(d, t) for d in depths for t in types]
        rng.shuffle(remaining)  # seeded tie-break among equally used cells
        cell = min(remaining, key=lambda c: type_uses[c[1]] + depth_uses[c[0]])
        remaining.remove(cell)
        cells.append(cell)
        type_uses[cell[1]] += 1
        depth_uses[cell[0]] += 1
    picked: list[Arch] = []
    seen: set[Arch] = set()
    for i, (depth, op) in enumerate(cells):
        pure = i < len(types) * len(depths)
        for _ in range(1000):
            arch = _pure_arch(space, depth, op, rng) if pure else _mixed_arch(space, depth, op, rng)
            if arch not in seen:
                break
        else:  # the cell is exhausted; n <= space.size() guarantees an unseen arch elsewhere
            arch = next(a for a in iter(lambda: space.sample(rng), None) if a not in seen)
        seen.add(arch)
        picked.append(arch)
    return picked


def _pure_arch(space: SearchSpace, depth: int, op: str, rng: random.Random) -> Arch:
    return Arch(depth, tuple(LayerArch(op, rng.choice(space.heads), rng.choice(space.ffn_dims)) for _ in range(depth)))


def _mixed_arch(space: SearchSpace, depth: int, op: str, rng: random.Random) -> Arch:
    forced = rng.randrange(depth)
    return Arch(
        depth,
        tuple(
            LayerArch(
                op if i == forced else rng.choice(tuple(space.attention)),
                rng.choice(space.heads),
                rng.choice(space.ffn_dims),
            )
            for i in range(depth)
        ),
    )


# -- statistics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankSummary:
    """How the inherited-weight ranking agrees with the standalone one."""

    n: int  # archs compared
    kendall_tau: float  # Kendall tau-b (scipy.stats.kendalltau); nan if either side is constant
    kendall_p: float  # its two-sided p-value
    spearman_rho: float  # Spearman rho (scipy.stats.spearmanr), average ranks for ties
    spearman_p: float  # its two-sided p-value
    k: int  # size of the top sets compared
    top_k_overlap: float  # |top-k by inherited & top-k by standalone| / k
    pick: int  # index of the arch the supernet would pick (best inherited, ties broken)
    regret: float  # best standalone minus the pick's standalone (>= 0; in the metric's units)
    top_tau: float  # Kendall tau-b among the `top_archs` best by standalone (`top_tau`); nan where constant
    top_archs: int  # how many archs that tau compares

    def to_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def supernet_order(
    inherited: Sequence[float],
    higher_is_better: bool = True,
    inherited_loss: Sequence[float] | None = None,
    cost: Sequence[float] | None = None,
) -> list[int]:
    """Indices best first by inherited metric; ties broken by lower inherited loss, then lower
    cost, then index: the order a strategy ranks archs in (`results.best_first`), so the pick
    measured here is the one a search would make. Without loss and cost (the standalone order),
    ties in the metric keep the index order."""
    sign = 1 if higher_is_better else -1
    return best_first_order([sign * v for v in inherited], inherited_loss, cost)


def rank_summary(
    inherited: Sequence[float],
    standalone: Sequence[float],
    higher_is_better: bool = True,
    k: int = 3,
    inherited_loss: Sequence[float] | None = None,
    cost: Sequence[float] | None = None,
    top: float = 0.25,
) -> RankSummary:
    """Rank agreement of inherited-weight metrics with standalone ones (same arch order).

    Args:
        inherited: each arch's metric with weights inherited from the supernet.
        standalone: each arch's metric after standalone training (e.g. the mean over seeds).
        higher_is_better: True for accuracy-like metrics, False for losses / perplexity.
        k: size of the top sets for the overlap (clipped to the number of archs).
        inherited_loss: tie-break for the supernet's pick and top-k: lower first.
        cost: second tie-break (e.g. parameters): lower first.
        top: the standalone-best archs among which `top_tau` is measured (`top_archs`).

    Returns:
        A RankSummary. Tau and rho are invariant to the metric's direction.
    """
    n = len(inherited)
    for name, values in (("standalone", standalone), ("inherited_loss", inherited_loss), ("cost", cost)):
        if values is not None and len(values) != n:
            raise ConfigError(f"{name}: expected {n} values (one per arch); got {len(values)}")
    if n < 2:
        raise ConfigError(f"rank_summary needs at least 2 archs; got {n}")
    if not all(math.isfinite(v) for v in [*inherited, *standalone]):
        raise ConfigError("rank_summary: metrics must be finite (an arch failed to evaluate?)")
    k = max(1, min(k, n))
    tau = stats.kendalltau(inherited, standalone)  # variant "b" is SciPy's default
    rho = stats.spearmanr(inherited, standalone)
    by_supernet = supernet_order(inherited, higher_is_better, inherited_loss, cost)
    by_standalone = supernet_order(standalone, higher_is_better)
    pick = by_supernet[0]
    return RankSummary(
        n=n,
        kendall_tau=float(tau.statistic),
        kendall_p=float(tau.pvalue),
        spearman_rho=float(rho.statistic),
        spearman_p=float(rho.pvalue),
        k=k,
        top_k_overlap=len(set(by_supernet[:k]) & set(by_standalone[:k])) / k,
        pick=pick,
        regret=regret(standalone, standalone[pick], higher_is_better),
        top_tau=top_tau(inherited, standalone, higher_is_better, top),
        top_archs=top_archs(n, top),
    )


def top_archs(n: int, top: float) -> int:
    """How many of `n` archs a top tau compares: `top` in (0, 1) is a fraction of them (rounded
    up), a whole number >= 2 a count; at least 2 (one pair) and at most n."""
    if (
        isinstance(top, bool)
        or not isinstance(top, (int, float))
        or not (0 < top < 1 or (top >= 2 and top == int(top)))
    ):
        raise ConfigError(f"top_tau={top!r}: expected a fraction of the archs in (0, 1), or a whole number >= 2")
    count = math.ceil(top * n) if top < 1 else int(top)
    return max(2, min(count, n))


def top_tau(
    predicted: Sequence[float], standalone: Sequence[float], higher_is_better: bool = True, top: float = 0.25
) -> float:
    """Kendall tau-b among the archs best by standalone training (`top_archs`; ties at the cut go
    by index): how well a predictor orders the top of the space, where a search decides. A
    supernet ranks the top worse than the whole space (Zhang et al. 2020, "How does supernet
    help in neural architecture search?", https://arxiv.org/abs/2010.08219).

    Args:
        predicted: each arch's predicted score, in the direction of `standalone`'s metric (for the
            supernet: its inherited metric).
        standalone: each arch's standalone metric.
        higher_is_better: the metric's direction, which decides what the best archs are.
        top: a fraction in (0, 1) or a count >= 2.

    Returns:
        tau-b; nan where one side is constant among them.
    """
    best = supernet_order(standalone, higher_is_better)[: top_archs(len(standalone), top)]
    return float(stats.kendalltau([predicted[i] for i in best], [standalone[i] for i in best]).statistic)


# -- free baselines and ensembles -----------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """How well one predictor of standalone quality ranks the archs: the supernet, an ensemble of
    supernets, or a free baseline (parameter count, FLOPs, a zero-cost proxy)."""

    name: str  # "supernet", "ensemble", "run0", "params", "flops", "synflow", ...
    kendall_tau: float  # tau-b against standalone, oriented so that +1 predicts the order exactly
    top_tau: float  # the same among the standalone-best archs (`top_tau`)
    regret: float  # best standalone minus that of the arch predicted best (nan: not finite)

    def to_dict(self) -> dict[str, float]:
        return {"kendall_tau": self.kendall_tau, "top_tau": self.top_tau, "regret": self.regret}

    @classmethod
    def of(cls, name: str, summary: RankSummary) -> Prediction:
        """A supernet's row: its tau and its pick's regret, ties broken as the search does."""
        return cls(name, summary.kendall_tau, summary.top_tau, summary.regret)

    def beats(self, other: Prediction) -> bool:
        """A higher tau and no more regret (a nan figure of `other` loses, one of this one's never wins)."""
        if math.isnan(self.kendall_tau) or math.isnan(self.regret):
            return False
        return not (other.kendall_tau >= self.kendall_tau or other.regret < self.regret)


def baseline(
    name: str, predicted: Sequence[float], standalone: Sequence[float], higher_is_better: bool = True, top: float = 0.25
) -> Prediction:
    """How well a free score ranks the archs when a bigger score predicts a better arch: parameter
    count (which ranks Transformer language models well: LiteTransformerSearch, Javaheripi et al.
    2022, https://arxiv.org/abs/2203.02094), FLOPs, a zero-cost proxy (`nas.proxies`).

    Tau is taken against the standalone metric oriented so that better is bigger (negated for a
    loss-like one), so a positive tau means "bigger is better" holds. Its pick is the arch with
    the biggest score; where several tie for it (archs of equal parameter count), the regret is
    the mean over them: the expected regret of picking one of them at random.

    Args:
        name: the predictor's name in tables.
        predicted: each arch's score; all nan when one is not finite (a proxy that overflowed).
        standalone: each arch's standalone metric.
        higher_is_better: the metric's direction.
        top: the standalone-best archs the top tau compares (`top_archs`).
    """
    if len(predicted) != len(standalone):
        raise ConfigError(f"{name}: expected {len(standalone)} values (one per arch); got {len(predicted)}")
    if not all(math.isfinite(v) for v in predicted):
        return Prediction(name, math.nan, math.nan, math.nan)
    sign = 1 if higher_is_better else -1
    oriented = [sign * v for v in standalone]
    best = max(predicted)
    picks = [v for v, p in zip(standalone, predicted) if p == best]
    return Prediction(
        name,
        float(stats.kendalltau(predicted, oriented).statistic),
        top_tau(predicted, oriented, True, top),
        sum(regret(standalone, v, higher_is_better) for v in picks) / len(picks),
    )


def standardised(values: Sequence[float]) -> list[float]:
    """z-scores: (x - mean) / standard deviation (the population's, ddof 0); all zeros where the
    values are equal, so a run that cannot tell the archs apart adds nothing to an ensemble."""
    mean, spread = statistics.mean(values), statistics.pstdev(values)  # exact sums: equal values spread 0
    return [(v - mean) / spread if spread > 0 else 0.0 for v in values]


def ensemble(per_run: Sequence[Sequence[float]]) -> list[float]:
    """The score of an ensemble of supernets: each run's scores of the same archs standardised
    (`standardised`), then averaged per arch. Standardising first keeps a run whose scores spread
    widely (a supernet that learned the task) from outweighing one whose scores sit near chance.

    Args:
        per_run: for each run, its score of every arch (the same archs in the same order).
    """
    if not per_run or len({len(scores) for scores in per_run}) != 1:
        raise ConfigError("ensemble: expected one score per arch from every run, the same archs in each")
    columns = [standardised(scores) for scores in per_run]
    return [sum(column[i] for column in columns) / len(columns) for i in range(len(per_run[0]))]


def seed_agreement(per_arch: Sequence[Sequence[float]]) -> float | None:
    """The noise ceiling of a ranking: Kendall tau-b between the standalone results of two seeds,
    averaged over every pair of seeds; how well one standalone training ranks the archs as
    another one does, and so about the most a supernet's tau can be expected to reach.

    Args:
        per_arch: each arch's standalone metric per seed (the same seeds in the same order).

    Returns:
        The mean tau-b over pairs of seeds (nan where one seed's results are all equal); None with
        fewer than two seeds.
    """
    seeds = len(per_arch[0]) if per_arch else 0
    if seeds < 2:
        return None
    taus = [
        stats.kendalltau([r[a] for r in per_arch], [r[b] for r in per_arch]).statistic
        for a, b in itertools.combinations(range(seeds), 2)
    ]
    return float(sum(taus) / len(taus))


def regret(standalone: Sequence[float], chosen: float, higher_is_better: bool = True) -> float:
    """How far a chosen arch's standalone metric falls short of the best one (>= 0 when `chosen`
    is among `standalone`), in the metric's units."""
    best = max(standalone) if higher_is_better else min(standalone)
    return float(best - chosen if higher_is_better else chosen - best)


def regret_per_seed(
    per_arch: Sequence[Sequence[float]], chosen: Sequence[float], higher_is_better: bool = True
) -> list[float]:
    """The regret measured on each standalone seed alone: how far it moves between seeds says how
    much of the regret of the means is the standalone trainings' noise.

    Args:
        per_arch: each ranked arch's standalone metric per seed (the same seeds in the same order).
        chosen: the chosen arch's metric per seed; it competes with the ranked archs (it may be one).
    """
    return [regret([*(r[s] for r in per_arch), value], value, higher_is_better) for s, value in enumerate(chosen)]


# -- files -----------------------------------------------------------------------------------
def read_archs(path: str | Path, space: SearchSpace | None = None) -> list[Arch]:
    """Archs from a YAML list of arch mappings, or from a search's `ranked.csv` (its `arch` column
    holds each arch as JSON). With `space`, each arch must lie in it. Bad files: one ConfigError line.
    """
    path = Path(path)
    if path.suffix == ".csv":
        archs = _archs_from_csv(path)
    else:
        data = read_yaml(path)
        if not isinstance(data, list) or not data:
            raise ConfigError(
                f"{path}: expected a non-empty YAML list of archs (each a mapping with 'depth' and 'layers')"
            )
        archs = [Arch.from_dict(item, source=f"{path}: item {i}") for i, item in enumerate(data)]
    if space is not None:
        for i, arch in enumerate(archs):
            try:
                space.validate(arch)
            except ConfigError as err:
                raise ConfigError(f"{path}: arch {i}: {err}") from None
    return archs


# A ranked.csv holds a row per trial, each arch as JSON (60 bytes a layer): 10,000 trials of
# 12-layer archs are 10 MB; the csv module and json read it in C, a second for 64 MiB.
MAX_CSV_BYTES = 64 * 2**20


def _archs_from_csv(path: Path) -> list[Arch]:
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path, limit=MAX_CSV_BYTES), newline="")))
    except csv.Error as err:  # e.g. a field past csv's 128 KiB limit
        raise ConfigError(f"{path}: malformed CSV: {err}") from None
    columns = rows[0].keys() if rows else []
    if "arch" not in columns:
        raise ConfigError(f"{path}: expected a ranked.csv with an 'arch' column of JSON archs and at least one row")
    archs = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 1}"
        archs.append(Arch.from_dict(parse_json(row["arch"] or "", f"{where}: 'arch'"), source=where))
    return archs


def write_archs(path: str | Path, archs: Sequence[Arch]) -> None:
    """The YAML list `read_archs` reads back (e.g. the stratified pick, to edit and reuse)."""
    atomic_write(path, yaml.safe_dump([a.to_dict() for a in archs], sort_keys=False))


@dataclass
class RankedArch:
    """One row of `ranking.csv`."""

    arch: Arch
    inherited: float  # the metric with inherited weights, whole validation set
    inherited_loss: float  # the validation loss with inherited weights
    standalone: list[float] = field(default_factory=list)  # metric per standalone seed
    cost: dict[str, float] = field(default_factory=dict)  # e.g. {"params": ..., "flops": ...}
    # other predictors' scores: zero-cost proxies ("synflow", "grad_norm") and, in an ensemble,
    # each run's own inherited metric ("run0", "run1", ...)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def standalone_mean(self) -> float:
        return sum(self.standalone) / len(self.standalone) if self.standalone else math.nan


def write_ranking(
    path: str | Path,
    rows: Sequence[RankedArch],
    metric: str,
    higher_is_better: bool = True,
    seeds: Sequence[int] | None = None,
) -> None:
    """Write `ranking.csv`: one row per arch with its cost, its other scores (`score_<name>`),
    inherited metric and loss, the standalone metric per seed and their mean, and both ranks
    (1 = best; ties share the average rank, as in Spearman's rho). `seeds` name the standalone columns
    (`standalone_<metric>_seed<s>`, in the order of each row's `standalone`); 0, 1, ... by default."""
    sign = -1 if higher_is_better else 1
    labels = list(seeds) if seeds is not None else list(range(max((len(r.standalone) for r in rows), default=0)))
    if any(len(r.standalone) > len(labels) for r in rows):
        raise ConfigError(f"write_ranking: a row has more standalone values than the {len(labels)} seeds named")
    cost_keys = sorted({k for r in rows for k in r.cost})
    score_keys = list(dict.fromkeys(k for r in rows for k in r.scores))  # in the order given
    inherited_rank = stats.rankdata([sign * r.inherited for r in rows])
    standalone = [r.standalone_mean for r in rows]
    have = [math.isfinite(v) for v in standalone]
    ranks = iter(stats.rankdata([sign * v for v, ok in zip(standalone, have) if ok]))
    standalone_rank = [next(ranks) if ok else "" for ok in have]
    # whole or absent, also with several writers
    with atomic_path(path) as partial, open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "arch_id",
                *(f"cost_{k}" for k in cost_keys),
                *(f"score_{k}" for k in score_keys),
                f"inherited_{metric}",
                "inherited_loss",
                *(f"standalone_{metric}_seed{s}" for s in labels),
                f"standalone_{metric}_mean",
                "inherited_rank",
                "standalone_rank",
                "arch",
            ]
        )
        for i, r in enumerate(rows):
            per_seed = [*r.standalone, *[""] * (len(labels) - len(r.standalone))]
            mean = r.standalone_mean if r.standalone else ""
            writer.writerow(
                [
                    i,
                    *(r.cost.get(k, "") for k in cost_keys),
                    *(r.scores.get(k, "") for k in score_keys),
                    r.inherited,
                    r.inherited_loss,
                    *per_seed,
                    mean,
                    float(inherited_rank[i]),
                    standalone_rank[i],
                    json.dumps(r.arch.to_dict()),
                ]
            )


def read_ranking(path: str | Path, metric: str) -> list[RankedArch]:
    """The rows of a `ranking.csv` that `write_ranking` wrote (e.g. to resume or re-summarise);
    empty standalone cells are archs not trained yet."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    needed = {"arch", f"inherited_{metric}", "inherited_loss"}
    if not table or not needed <= set(table[0]):
        raise ConfigError(f"{path}: expected a ranking.csv with the columns {', '.join(sorted(needed))}")
    prefix = f"standalone_{metric}_seed"
    seeds = sorted(
        (k for k in table[0] if k.startswith(prefix) and k[len(prefix) :].isdigit()),
        key=lambda k: int(k[len(prefix) :]),
    )  # seed10 after seed9
    rows = []
    for i, row in enumerate(table):
        try:
            rows.append(
                RankedArch(
                    arch=Arch.from_dict(json.loads(row["arch"]), source=f"{path}: row {i + 1}"),
                    inherited=float(row[f"inherited_{metric}"]),
                    inherited_loss=float(row["inherited_loss"]),
                    standalone=[float(row[k]) for k in seeds if row[k] != ""],
                    cost={k[len("cost_") :]: float(v) for k, v in row.items() if k.startswith("cost_") and v != ""},
                    scores={k[len("score_") :]: float(v) for k, v in row.items() if k.startswith("score_") and v != ""},
                )
            )
        except (ValueError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: row {i + 1}: {err}") from None
    return rows
