"""The `nas-rank` recipe: how faithfully a search run's supernet ranks archs. Each arch is scored
with the supernet's weights and after standalone training from scratch; the two rankings are
compared by Kendall tau-b, Spearman rho, top-k overlap and the regret of the supernet's pick,
beside what free baselines reach (parameter count, FLOPs, zero-cost proxies at initialisation)
and, for several search runs of one space and task, an ensemble of their supernets.

    measured = rank(cfg)    # configs/rank.yaml; writes <run>/rank/ (an ensemble: <first run>/rank/ensemble/)

The measurement follows "Evaluating the search phase of NAS" (Yu et al. 2020,
https://arxiv.org/abs/1902.08142); the statistics and files are `nas.ranking`, the standalone
jobs `nas.jobs.engine` running `nas.training.standalone.train`. It sits beside `nas.pipeline`
(search, retrain, export), at the same layer, and imports nothing from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from nas import cost, proxies, ranking, viz
from nas.atomic import atomic_write
from nas.errors import ConfigError, build_config, check_whole
from nas.jobs.engine import JobsConfig, check_engine, run_jobs
from nas.jobs.job import Budget, Job, read_result
from nas.metrics import HIGHER_IS_BETTER, evaluate_with_loss, score
from nas.model import ModelSpec
from nas.ops.attention import revisions
from nas.safe_load import read_yaml
from nas.space import Arch, SearchSpace
from nas.tasks import build_task
from nas.training import standalone
from nas.training.calibrate import Calibration, calibrate
from nas.training.checkpoint import resumable
from nas.training.search import load_supernet
from nas.training.tensorboard import log_rank

log = logging.getLogger("nas")


@dataclass(frozen=True)
class RankOutcome:
    """A `nas-rank` measurement of a search run."""

    dir: Path  # <run>/rank: ranking.csv, summary.json, archs.yaml, standalone/, tensorboard/
    rows: list[ranking.RankedArch]  # one per arch, in the order ranked
    summary: ranking.RankSummary  # Kendall tau-b, Spearman rho, top-k overlap, regret (of the ensemble, if one)
    # the supernet (or the ensemble, then each of its runs) beside the free baselines
    predictions: list[ranking.Prediction]
    search_pick: SearchPick | None  # the search's own choice (best_arch.yaml), trained standalone too
    trained: int  # standalone jobs trained by this call (0 when every one had finished before)
    text: str  # what was printed


@dataclass(frozen=True)
class SearchPick:
    """The arch the search itself chose (its `best_arch.yaml`), scored like the ranked archs. It
    may lie outside them (DARTS' decided arch, a random search's best of its own samples), so it
    stays out of tau and rho: its regret answers "how good is what my search returned?"."""

    arch: Arch
    inherited: float
    standalone_mean: float
    regret: float  # the best standalone among the ranked archs and this one, minus this one's
    regret_per_seed: list[float] | None = None  # the same on each standalone seed alone (2+ seeds)

    def to_dict(self) -> dict:
        return {
            "search_pick_arch": self.arch.to_dict(),
            "search_pick_inherited": self.inherited,
            "search_pick_standalone": self.standalone_mean,
            "search_pick_regret": self.regret,
            "search_pick_regret_per_seed": self.regret_per_seed,
        }


def rank(cfg: DictConfig) -> RankOutcome:
    """Score archs of a search run with the supernet's weights and after standalone training,
    and measure how well the first ranking predicts the second.

    Inherited: the metric and loss of each arch with the run's supernet weights over the whole
    validation set. Standalone: each arch trained from scratch for `cfg.budget` (the same for
    every arch, no early stopping) once per seed of `cfg.seeds`, scored on the same set. Jobs
    are recorded one by one in `<run>/rank/standalone/` (or `cfg.standalone_dir`), so a rerun
    trains only what is missing, and the search runs of one task and space can share them. The
    jobs run on submitit (`nas.jobs.engine`): local processes or SLURM, as `cfg.jobs` says.

    With `cfg.search_pick` (the default) the search's own `best_arch.yaml` is scored and
    trained the same way, and its regret reported beside that of the supernet's pick.

    The free baselines rank the same archs by parameter count, by FLOPs and by zero-cost proxies
    of each arch at its initialisation (`nas.proxies`), a bigger value predicting a better arch.
    With several runs (`run=[a, b]`, supernets of one space and task) the archs are ranked by
    the mean of each run's standardised inherited scores (`ranking.ensemble`), beside each run's
    own ranking; the search picks are then left out.

    Args:
        cfg: configs/rank.yaml: `run`, `archs`, `seed`, `seeds`, `workers`, `top_k`, `top_tau`,
            `search_pick`, `standalone_dir`, `calibrate`, `budget`, `jobs`, `trainer`, `paths`.
    """
    start = time.perf_counter()
    runs = _search_runs(cfg.get("run"))
    run_dir = runs[0]  # its rank/ holds the results (an ensemble's in rank/ensemble) and the standalone jobs
    seeds = _seeds(cfg.get("seeds"))  # every check before any work
    budget = build_config(Budget, OmegaConf.to_container(cfg.budget, resolve=True), "nas-rank", "budget")
    calibration = build_config(
        Calibration, OmegaConf.to_container(cfg.get("calibrate") or {}, resolve=True), "nas-rank", "calibrate"
    )
    engine = build_config(JobsConfig, OmegaConf.to_container(cfg.get("jobs") or {}, resolve=True), "nas-rank", "jobs")
    workers = cfg.get("workers")
    check_engine(engine, workers)
    top_k = cfg.get("top_k", 3)
    check_whole(top_k, "top_k", 1)
    top_tau = cfg.get("top_tau", 0.25)
    ranking.top_archs(2, top_tau)  # checked now
    saved = _saved_config(run_dir)
    data_dir = _saved_data_dir(saved, cfg.paths.data_dir)
    supernets = [
        load_supernet(resumable(r / "checkpoints" / "last.ckpt") or r / "checkpoints" / "last.ckpt") for r in runs
    ]
    space = supernets[0].space
    archs = _archs_to_rank(cfg.get("archs"), space, cfg.seed)
    chosen = _search_choice(run_dir, space) if cfg.get("search_pick", True) and len(runs) == 1 else None
    scored = archs + [chosen] if chosen is not None and chosen not in archs else archs
    task = build_task(saved.get("task"), data_dir, f"{run_dir / '.hydra' / 'config.yaml'}: task")
    _check_one_search_problem(runs, supernets, task, data_dir)
    out = run_dir / "rank" / "ensemble" if len(runs) > 1 else run_dir / "rank"
    out.mkdir(parents=True, exist_ok=True)
    # a job's id hashes arch, space, task, seed and budget, so runs of one task may share results
    folder = Path(str(cfg.standalone_dir)) if cfg.get("standalone_dir") else run_dir / "rank" / "standalone"
    ranking.write_archs(out / "archs.yaml", archs)

    log.info(
        "ranking %d archs of %s: inherited scores on %d validation examples%s",
        len(archs),
        ", ".join(map(str, runs)),
        len(task.val_dataloader().dataset),
        f", each after {calibration.steps} calibration steps" if calibration.steps else "",
    )
    per_run = []  # each run's {arch: (metric, loss)}
    while supernets:  # one supernet in memory at a time from here on
        supernet = supernets.pop(0)
        per_run.append({a: inherited_score(supernet, a, task, calibration, cfg.seed) for a in scored})
        del supernet
    inherited = per_run[0]
    first_batch = next(iter(task.train_dataloader()))
    zero_cost = {a: proxies.at_initialisation(ModelSpec(a, space, task.shape), first_batch, seeds[0]) for a in archs}

    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_options = {**{k: trainer[k] for k in ("accelerator", "precision") if k in trainer}, "devices": 1}
    jobs = {
        (a, s): Job(
            ModelSpec(a, space, task.shape).to_dict(),
            task.record(),
            str(data_dir),
            s,
            budget,
            trainer_options,
            revisions(space.op_types(a)),
        )
        for a in scored
        for s in seeds
    }
    results, trained = standalone_results(jobs, folder, engine, workers, task.metric)

    rows = [
        ranking.RankedArch(
            a,
            *inherited[a],
            [results[a, s]["val"] for s in seeds],
            _costs(ModelSpec(a, space, task.shape), task.seq_len),
            zero_cost[a],
        )
        for a in archs
    ]
    higher = HIGHER_IS_BETTER[task.metric]
    run_summaries = [_summary(rows, [run[r.arch] for r in rows], higher, top_k, top_tau) for run in per_run]
    if len(runs) > 1:  # the rows carry the ensemble's scores, and each run's own metric beside them
        for i, (metric, loss) in enumerate(_ensemble_scores(rows, per_run)):
            run_scores = {f"run{j}": run[rows[i].arch][0] for j, run in enumerate(per_run)}
            rows[i] = dataclasses.replace(
                rows[i], inherited=metric, inherited_loss=loss, scores={**rows[i].scores, **run_scores}
            )
    ranking.write_ranking(out / "ranking.csv", rows, task.metric, higher, seeds)
    summary = _summary(rows, [(r.inherited, r.inherited_loss) for r in rows], higher, top_k, top_tau)
    predictions = _predictions(rows, summary, run_summaries, higher, top_tau)
    seed_tau = ranking.seed_agreement([r.standalone for r in rows])
    pick_regret_per_seed = _regret_per_seed(rows, rows[summary.pick].standalone, higher, seeds)
    search_pick = (
        None
        if chosen is None
        else _search_pick(chosen, inherited[chosen], rows, [results[chosen, s]["val"] for s in seeds], higher, seeds)
    )
    # what the ground truth cost, trained now or read from earlier runs; by id, so that rankings
    # sharing one standalone_dir can be summed without counting a job twice (scripts/studies/rank_study.py)
    train_seconds = {job.id: results[key]["train_seconds"] for key, job in jobs.items()}
    seconds = time.perf_counter() - start
    text = rank_text(
        rows,
        summary,
        search_pick,
        task.metric,
        budget,
        seeds,
        len(trained),
        out,
        seconds,
        calibration,
        seed_tau,
        pick_regret_per_seed,
        sum(train_seconds.values()),
        predictions,
    )
    record = {
        **summary.to_dict(),
        # each predictor's kendall_tau, top_tau and regret: "supernet" (or "ensemble" and "run0",
        # "run1", ...), then the free baselines
        "predictors": {p.name: p.to_dict() for p in predictions},
        "regret_per_seed": pick_regret_per_seed,
        **(search_pick.to_dict() if search_pick else {}),
        "standalone_seed_tau": seed_tau,
        "metric": task.metric,
        "higher_is_better": higher,
        "pick_arch": rows[summary.pick].arch.to_dict(),
        "budget": dataclasses.asdict(budget),
        "seeds": seeds,
        "calibrate": dataclasses.asdict(calibration),
        "val_examples": len(task.val_dataloader().dataset),
        "run": str(run_dir),
        "runs": [str(r) for r in runs],
        "standalone_dir": str(folder),
        "trained_now": len(trained),
        "wall_seconds": round(seconds, 1),
        "standalone_train_seconds": train_seconds,
    }
    _write_json(out / "summary.json", record)
    write_rank_tensorboard(out / "tensorboard", rows, summary, search_pick, seed_tau, task.metric, text, predictions)
    return RankOutcome(
        dir=out,
        rows=rows,
        summary=summary,
        predictions=predictions,
        search_pick=search_pick,
        trained=len(trained),
        text=text,
    )


def standalone_results(
    jobs: dict[tuple[Arch, int], Job], folder: Path, engine: JobsConfig, workers, metric: str
) -> tuple[dict, list]:
    """Train the jobs not recorded in `folder` yet on `engine`; every job's result (by (arch,
    seed)) and the jobs trained now. A result of another metric than the task's is one line."""
    trained = run_jobs(list(jobs.values()), folder, standalone.train, engine, workers).trained
    results = {key: read_result(folder, job) for key, job in jobs.items()}
    for key, job in jobs.items():  # read_result checks val in the range of the metric the file claims
        if results[key]["metric"] != metric:
            raise ConfigError(
                f"standalone result {folder / (job.id + '.json')}: its metric is not this "
                f"task's ({metric}); remove the file to train the job again"
            )
    return results, trained


def _costs(spec: ModelSpec, seq_len: int) -> dict[str, float]:
    estimate = cost.estimate(spec, seq_len)
    return {"params": estimate.params, "flops": estimate.flops}


def _summary(
    rows: list[ranking.RankedArch], inherited: list[tuple[float, float]], higher: bool, top_k: int, top_tau: float
) -> ranking.RankSummary:
    """The ranking by `inherited` (each row's (metric, loss)) against the rows' standalone means;
    ties in the metric go to the lower loss, then to fewer parameters, as in a search."""
    return ranking.rank_summary(
        [metric for metric, _ in inherited],
        [r.standalone_mean for r in rows],
        higher,
        k=top_k,
        inherited_loss=[loss for _, loss in inherited],
        cost=[r.cost["params"] for r in rows],
        top=top_tau,
    )


def _ensemble_scores(rows: list[ranking.RankedArch], per_run: list[dict]) -> list[tuple[float, float]]:
    """Each row's (metric, loss) of the ensemble: the mean over runs of each run's standardised ones."""
    metric = ranking.ensemble([[run[r.arch][0] for r in rows] for run in per_run])
    loss = ranking.ensemble([[run[r.arch][1] for r in rows] for run in per_run])
    return list(zip(metric, loss))


# the free baselines, each a bigger-is-better score of an arch: its cost, or a zero-cost proxy
BASELINES = ("params", "flops", *proxies.PROXIES)


def _predictions(
    rows: list[ranking.RankedArch],
    summary: ranking.RankSummary,
    run_summaries: list[ranking.RankSummary],
    higher: bool,
    top_tau: float,
) -> list[ranking.Prediction]:
    """The supernet's row (an ensemble's, then each of its runs'), then each free baseline's."""
    standalone = [r.standalone_mean for r in rows]
    supernets = (
        [
            ranking.Prediction.of("ensemble", summary),
            *(ranking.Prediction.of(f"run{i}", s) for i, s in enumerate(run_summaries)),
        ]
        if len(run_summaries) > 1
        else [ranking.Prediction.of("supernet", summary)]
    )
    return [
        *supernets,
        *(
            ranking.baseline(name, [{**r.cost, **r.scores}[name] for r in rows], standalone, higher, top_tau)
            for name in BASELINES
        ),
    ]


def _regret_per_seed(
    rows: list[ranking.RankedArch], chosen_alone: list[float], higher: bool, seeds: list[int]
) -> list[float] | None:
    """The regret's spread over seeds (None with one seed)."""
    return ranking.regret_per_seed([r.standalone for r in rows], chosen_alone, higher) if len(seeds) > 1 else None


def _search_pick(
    chosen: Arch,
    inherited: tuple[float, float],
    rows: list[ranking.RankedArch],
    scored_alone: list[float],
    higher: bool,
    seeds: list[int],
) -> SearchPick:
    mean = ranking.RankedArch(chosen, *inherited, scored_alone).standalone_mean
    return SearchPick(
        chosen,
        inherited[0],
        mean,
        ranking.regret([*(r.standalone_mean for r in rows), mean], mean, higher),
        _regret_per_seed(rows, scored_alone, higher, seeds),
    )


def write_rank_tensorboard(
    folder: Path,
    rows: list[ranking.RankedArch],
    summary: ranking.RankSummary,
    search_pick: SearchPick | None,
    seed_tau: float | None,
    metric: str,
    text: str,
    predictions: list[ranking.Prediction] = (),
) -> None:
    """The measurement in TensorBoard (`log_rank`): the scatter, the figures and the printed table;
    each predictor but the first (the supernet's or the ensemble's own) as `<name>_kendall_tau`,
    `<name>_top_tau` and `<name>_regret`."""
    with SummaryWriter(str(folder)) as writer:
        figures = {k: v for k, v in summary.to_dict().items() if k not in ("n", "k", "top_archs")}
        for p in predictions[1:]:
            figures.update({f"{p.name}_{k}": v for k, v in p.to_dict().items()})
        if search_pick is not None:
            figures["search_pick_regret"] = search_pick.regret
        if seed_tau is not None:
            figures["standalone_seed_tau"] = seed_tau
        log_rank(
            writer,
            [r.arch for r in rows],
            [r.inherited for r in rows],
            [r.standalone_mean for r in rows],
            figures,
            metric,
            "```\n" + text + "\n```",
        )


def inherited_score(supernet, arch: Arch, task, calibration: Calibration, seed: int) -> tuple[float, float]:
    """(metric, loss) of `arch` with the supernet's weights on the whole validation set; with
    calibration steps, of a copy of them fine-tuned that long first (`nas.training.calibrate`)."""
    if not calibration.steps:
        return evaluate_with_loss(supernet, task.val_dataloader(), task.metric, arch=arch)
    subnet = calibrate(supernet.extract(arch), task.train_dataloader, calibration, seed)
    metric, loss = evaluate_with_loss(subnet, task.val_dataloader(), task.metric)
    log.info("calibrated %s: %s %.4f, loss %.4f", _compact(arch), task.metric, metric, loss)
    return metric, loss


def _search_runs(runs: object) -> list[Path]:
    """The folder of `run=<folder>`, or of each run of `run=[<a>, <b>]` (an ensemble)."""
    if isinstance(runs, (list, tuple)) or OmegaConf.is_list(runs):
        if not runs or len(set(map(str, runs))) != len(runs):
            raise ConfigError(f"run={list(runs)}: expected one search run folder or a list of distinct ones")
        return [_search_run(r) for r in runs]
    return [_search_run(runs)]


def _check_one_search_problem(runs: list[Path], supernets: list, task, data_dir: Path) -> None:
    """An ensemble averages scores of one space on one task: any other run is refused in one line."""
    for run_dir, supernet in zip(runs[1:], supernets[1:]):
        if supernet.space != supernets[0].space:
            raise ConfigError(
                f"run={run_dir}: its supernet's space ({supernet.space.name}) is not that of {runs[0]} "
                f"({supernets[0].space.name}); an ensemble needs runs of one space and task"
            )
        saved = _saved_config(run_dir)
        record = build_task(saved.get("task"), data_dir, f"{run_dir / '.hydra' / 'config.yaml'}: task").record()
        if record != task.record():
            differs = sorted(k for k in {*record, *task.record()} if record.get(k) != task.record().get(k))
            raise ConfigError(
                f"run={run_dir}: its task differs from that of {runs[0]} (in {', '.join(differs)}); "
                "an ensemble needs runs of one space and task"
            )


def _search_run(run: object) -> Path:
    if not run:
        raise ConfigError("run: missing; pass a search run folder, e.g. run=runs/search/<timestamp>")
    run_dir = Path(str(run))
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        what = "no such folder" if not run_dir.exists() else "no checkpoints/last.ckpt in it"
        raise ConfigError(f"run={run}: not a search run folder ({what}); pass the folder nas-search printed")
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ConfigError(
            f"run={run}: no .hydra/config.yaml (the search's config, which names its task); "
            "pass a folder nas-search wrote"
        )
    return run_dir


def _saved_config(run_dir: Path) -> dict:
    """The search's `.hydra/config.yaml` as plain data: the run folder may come from someone
    else, so it is read with bounds and its interpolations are never resolved."""
    path = run_dir / ".hydra" / "config.yaml"
    saved = read_yaml(path, "the search's config")
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: not a search config (a mapping with a 'task')")
    return saved


def _saved_data_dir(saved: dict, default: str) -> Path:
    """The search's own data cache if its config names one plainly, else this command's."""
    paths = saved.get("paths")
    value = paths.get("data_dir") if isinstance(paths, dict) else None
    return Path(str(value if isinstance(value, str) and "${" not in value else default))


def _archs_to_rank(archs: object, space: SearchSpace, seed: int) -> list[Arch]:
    if isinstance(archs, int) and not isinstance(archs, bool):
        if archs < 2:
            raise ConfigError(f"archs={archs}: ranking needs at least 2 archs")
        return ranking.stratified_archs(space, archs, seed=seed)
    if isinstance(archs, str) and archs:
        picked = ranking.read_archs(archs, space)
        if len(set(picked)) < 2:
            raise ConfigError(
                f"archs={archs}: ranking needs at least 2 distinct archs; the file has {len(set(picked))}"
            )
        return list(dict.fromkeys(picked))
    raise ConfigError(
        f"archs={archs!r}: expected a number of archs (a stratified pick) or a file "
        "(a YAML list of archs, or a ranked.csv / ranking.csv)"
    )


def _search_choice(run_dir: Path, space: SearchSpace) -> Arch | None:
    """The search's `best_arch.yaml` (None when the run has none, e.g. killed before it chose)."""
    path = run_dir / "best_arch.yaml"
    if not path.is_file():
        log.info("%s: no best_arch.yaml, so no search pick to score", run_dir)
        return None
    arch = Arch.from_yaml(path)
    try:
        space.validate(arch)
    except ConfigError as err:
        raise ConfigError(
            f"{path}: the search's pick is not in its supernet's space ({err}); "
            "pass search_pick=false to rank without it"
        ) from None
    return arch


def _seeds(seeds: object) -> list[int]:
    values = list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if isinstance(values, (list, tuple)) or OmegaConf.is_list(values):
        values = list(values)
        if (
            values
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values)
            and len(set(values)) == len(values)
        ):
            return values
    raise ConfigError(f"seeds={seeds!r}: expected a number of seeds (0..N-1) or a list of distinct whole numbers >= 0")


def rank_text(
    rows: list[ranking.RankedArch],
    summary: ranking.RankSummary,
    search_pick: SearchPick | None,
    metric: str,
    budget: Budget,
    seeds: list[int],
    trained: int,
    out: Path,
    seconds: float,
    calibration: Calibration,
    seed_tau: float | None,
    regret_per_seed: list[float] | None,
    train_seconds: float,
    predictions: list[ranking.Prediction],
) -> str:
    """The screen `nas-rank` prints: one line per arch, best standalone first, then the figures,
    then the supernet (or ensemble) beside the free baselines."""
    order = sorted(range(len(rows)), key=lambda i: -score(rows[i].standalone_mean, metric))
    ensemble = predictions[0].name == "ensemble"
    lines = [
        "",
        f"{'#':>3}  {'attention':<12}{'depth':>5}  {'ensemble' if ensemble else 'inherited':>9}  "
        f"{'standalone':>10}  layers (attention/heads/ffn)",
    ]
    for i in order:
        r = rows[i]
        mark = f" <- {'ensemble' if ensemble else 'supernet'}'s pick" if i == summary.pick else ""
        lines.append(
            f"{i:>3}  {viz.attention_label(r.arch):<12}{r.arch.depth:>5}  {r.inherited:>9.4f}  "
            f"{r.standalone_mean:>10.4f}  {_compact(r.arch)}{mark}"
        )
    best = max(r.standalone_mean for r in rows) if HIGHER_IS_BETTER[metric] else min(r.standalone_mean for r in rows)
    lines += [
        "",
        f"{summary.n} archs; standalone: {budget.max_epochs} epochs from scratch, seeds {seeds} "
        f"({trained} trained now, {seconds:.0f} s; {train_seconds:.0f} s of training summed over all "
        f"jobs); val/{metric} on the whole validation set",
        *(
            [f"inherited: after {calibration.steps} calibration steps at lr {calibration.lr:g}"]
            if calibration.steps
            else []
        ),
        *(
            [
                f"ensemble: the mean of the {sum(p.name not in BASELINES for p in predictions) - 1} runs' standardised inherited scores"
            ]
            if ensemble
            else []
        ),
        f"Kendall tau-b   {summary.kendall_tau:.3f}  (p {summary.kendall_p:.3g}); among the "
        f"{summary.top_archs} best by standalone {summary.top_tau:.3f}",
        *(
            [
                f"seed agreement  {seed_tau:.3f}  (tau-b between standalone seeds: about the most the "
                "supernet's tau can reach)"
            ]
            if seed_tau is not None
            else []
        ),
        f"Spearman rho    {summary.spearman_rho:.3f}  (p {summary.spearman_p:.3g})",
        f"top-{summary.k} overlap   {summary.top_k_overlap:.3f}",
        f"regret          {summary.regret:.4f}  (the pick's standalone {rows[summary.pick].standalone_mean:.4f}, "
        f"best {best:.4f}){_by_seed(regret_per_seed)}",
        *(
            [
                f"search's pick   regret {search_pick.regret:.4f}  (best_arch.yaml: inherited "
                f"{search_pick.inherited:.4f}, standalone {search_pick.standalone_mean:.4f}; "
                f"{_compact(search_pick.arch)}){_by_seed(search_pick.regret_per_seed)}"
            ]
            if search_pick
            else []
        ),
        "",
        *predictions_text(predictions, summary.top_archs),
        "",
        f"{'ranking':<16}{out / 'ranking.csv'}",
        f"{'summary':<16}{out / 'summary.json'}",
        f"{'tensorboard':<16}tensorboard --logdir {out / 'tensorboard'}",
    ]
    return "\n".join(lines)


def predictions_text(predictions: list[ranking.Prediction], top_archs: int) -> list[str]:
    """The table of predictors, and whether the supernet (or ensemble) beats every free baseline:
    a higher tau and no more regret. Where counting parameters does as well, this says so."""
    lines = [
        f"{'predictor':<12}{'tau-b':>7}  {f'best-{top_archs} tau':>11}  {'regret':>7}   "
        "(baselines: a bigger value predicts a better arch)"
    ]
    lines += [f"{p.name:<12}{p.kendall_tau:>7.3f}  {p.top_tau:>11.3f}  {p.regret:>7.4f}" for p in predictions]
    main = predictions[0]
    behind = [p for p in predictions if p.name in BASELINES and not main.beats(p)]
    if not behind:
        return [*lines, f"the {main.name} beats every free baseline on tau and on regret"]
    return [
        *lines,
        f"the {main.name} does NOT beat "
        + "; ".join(
            f"{p.name} (its tau {p.kendall_tau:.3f} against {main.kendall_tau:.3f}, its regret {p.regret:.4f} "
            f"against {main.regret:.4f})"
            for p in behind
        ),
    ]


def _by_seed(regrets: list[float] | None) -> str:
    return f"; on each seed alone: {', '.join(f'{r:.4f}' for r in regrets)}" if regrets else ""


def _compact(arch: Arch) -> str:
    return " ".join(f"{layer.attention}/{layer.heads}/{layer.ffn_dim}" for layer in arch.layers)


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")  # machines sharing a run write it too
