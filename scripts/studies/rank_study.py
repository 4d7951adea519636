"""Does weight sharing rank archs faithfully? One command per table of docs/ranking-study.md: per
sharing mechanism, a `nas-search strategy=random` run on an experiment preset (the
quickstart's key-value lookup, `recall_1k` at 1024 tokens, ListOps as `listops_128` or the hybrid
mixers' byte LM as `hybrid_lm_quick`), then
`nas-rank` of one fixed stratified set of archs against standalone training from scratch (Yu et
al. 2020, https://arxiv.org/abs/1902.08142).

    python scripts/studies/rank_study.py                        # every mechanism, 16 archs, one seed
    python scripts/studies/rank_study.py --experiment recall_1k --supernet-epochs 8 \
        --mechanisms entangled fair separate gdas darts_pc4 --out runs/rank_study_1k   # task (b), 1024 tokens
    python scripts/studies/rank_study.py --experiment listops_128 --supernet-epochs 4 \
        --standalone-epochs 4 --seeds 0 1 2 --out runs/rank_study_listops            # task (c), ListOps
    python scripts/studies/rank_study.py --experiment hybrid_lm_quick --mechanisms entangled separate \
        --archs 12 --supernet-epochs 6 --standalone-epochs 6 --seeds 0 1 --out runs/rank_study_hybrid_lm
    python scripts/studies/rank_study.py --seeds 0 1 --search-seeds 0 1      # task (a)'s table
    python scripts/studies/rank_study.py --seeds 0 1 --supernet-epochs 15 \
        --out runs/rank_study_e15 --standalone-dir runs/rank_study/standalone     # its last column

Every row ranks the same archs (`<out>/archs.yaml`, a seeded stratified pick) and reads the same
standalone results (`nas-rank standalone_dir=<out>/standalone`): a standalone training depends
only on arch, seed, budget and task, so it is trained once for the whole table. Every search
trains its supernet for the same number of epochs (5 by default; `--supernet-epochs`) of
the same batches; FairNAS and the sandwich rule spend more compute per step, which the wall times show.

`--mechanisms gdas darts_pc4` adds the differentiable strategies as rows. Every row reports the
regret of the supernet's pick among the ranked archs (`regret`) and of the search's own
`best_arch.yaml` (`search_pick_regret`), which for DARTS and GDAS is the arch they decided on.

Every row also carries `nas-rank`'s free baselines (the tau and regret of ranking by parameter
count, FLOPs and the zero-cost proxies synflow and grad_norm) and tau among the standalone-best
quarter. With two search seeds or more, each mechanism also gets an ensemble row: `nas-rank
run=[<seed 0's run>,<seed 1's run>,...]`, the mean of the supernets' standardised inherited scores.

Resumable: a finished search (its `best_arch.yaml`) and a finished row (`<out>/rows/<name>.json`)
are reused, so a killed study rerun with the same arguments continues. `--searches-from <study>`
copies another study's finished searches instead of running them again: the same supernets ranked
against another standalone budget. Prints one JSON object:
the settings (budgets, seeds, archs), one entry per row with Kendall tau-b, Spearman rho,
top-k overlap, regret, the supernet's pick, the baselines and the wall times of search and
ranking, and one per ensemble.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

from nas import ranking
from nas.ops.attention import ATTENTION, revisions
from nas.space import SearchSpace
from nas.training.calibrate import Calibration

ROOT = Path(__file__).resolve().parents[2]  # the repository: configs/, search_spaces/, runs/

# name -> the nas-search overrides that select the mechanism (everything else: the experiment's).
# The sharing mechanisms train the supernet by sampling paths (`strategy=random`, 20 samples);
# the last rows are the differentiable strategies, whose own pick (best_arch.yaml) is what
# their regret measures (issue 14).
RANDOM = ["strategy=random", "strategy.fair=false"]  # one random path per step (SPOS)
SHARED = "sharing=entangled"  # every row names its sharing: the CLI's default (separate) may change
ARGMAX = "strategy.decide.rule=argmax"  # and the differentiable rows how they decide (the default is greedy)
MECHANISMS = {
    "entangled": [*RANDOM, SHARED],  # attention types share Q/K/V/O
    "separate": [*RANDOM, "sharing=separate"],  # each attention type owns its Q/K/V/O
    "entangled_gain": [*RANDOM, "sharing=entangled_gain"],  # shared Q/K/V/O plus per-type gains
    "few_shot": [
        *RANDOM,
        SHARED,
        "few_shot=layer0.attention",
    ],  # a sub-supernet per layer-0 attention type (Zhao et al.)
    "fair": ["strategy=random", "strategy.fair=true", SHARED],  # every choice of every layer once a step (FairNAS)
    # FairNAS trains every type's own Q/K/V/O at every step, where SPOS gives each a sixth of them
    "fair_separate": ["strategy=random", "strategy.fair=true", "sharing=separate"],  # the CLI's default
    "sandwich": [
        *RANDOM,
        SHARED,
        "strategy.sandwich=true",
        "strategy.distill=0.5",
    ],  # BigNAS sandwich + in-place distillation
    "sort_every": [*RANDOM, SHARED, "strategy.sort_every=1"],  # OFA importance sorting of heads/FFN units every epoch
    # (each names how it decides at the end, as each names its sharing: the argmax of the weights)
    "gdas": ["strategy=gdas", SHARED, ARGMAX],  # one Gumbel-softmax path per step
    "darts_pc4": [
        "strategy=darts",
        "strategy.partial=4",
        SHARED,
        ARGMAX,
    ],  # PC-DARTS, a quarter of the heads per candidate
    # the same with each attention type's own Q/K/V/O, as in fair_separate
    "gdas_separate": ["strategy=gdas", "sharing=separate", ARGMAX],
    "darts_pc4_separate": ["strategy=darts", "strategy.partial=4", "sharing=separate", ARGMAX],
    # GDAS's decision checked at the end: per decision its top two compared by the supernet's score
    "gdas_separate_compare": ["strategy=gdas", "sharing=separate", "strategy.decide.rule=top2"],
    # ... or every decision settled in turn among all its candidates by the supernet's score (the default)
    "gdas_separate_greedy": ["strategy=gdas", "sharing=separate", "strategy.decide.rule=greedy"],
    "darts_pc4_separate_greedy": [
        "strategy=darts",
        "strategy.partial=4",
        "sharing=separate",
        "strategy.decide.rule=greedy",
    ],
}
SAMPLING = [name for name, overrides in MECHANISMS.items() if "strategy=random" in overrides]  # default rows

# --experiment -> the task in words for study.json; every search runs that preset
# (configs/experiment/<name>.yaml), whose space and retraining lr the study reads (`preset`)
EXPERIMENTS = {
    "quickstart": "lookup (quickstart: 64 tokens, 4 pairs, 4000 train / 500 val, batch 32)",
    "recall_1k": "lookup at 1024 tokens (8 pairs, 8 queries, 2000 train / 500 val, batch 16)",
    "listops_128": "ListOps, nesting <= 3, <= 5 arguments, 17-127 tokens (50000 train / 2000 val, batch 32)",
    "hybrid_lm_quick": "byte LM at 256 bytes on the hybrid mixers' causal space (1024 crops per epoch, bits per byte)",
}


def preset(name: str) -> dict:
    """The experiment preset's space and learning rate: standalone training uses the lr the
    preset retrains with, so that the ground truth trains as a user's retraining would."""
    return {**_preset_fields(name), "task": EXPERIMENTS[name]}


def _preset_fields(name: str) -> dict:
    """The space and retraining lr of configs/experiment/<name>.yaml, read through the presets it
    builds on (a plain name in its defaults list), as Hydra composes them: its own values win."""
    config = yaml.safe_load((ROOT / "configs" / "experiment" / f"{name}.yaml").read_text())
    fields = {}
    for item in config["defaults"]:
        if isinstance(item, str) and item != "_self_":
            fields.update(_preset_fields(item))
        elif isinstance(item, dict) and "override /space" in item:
            fields["space"] = item["override /space"]
    if "lr" in config.get("retrain", {}):
        fields["lr"] = config["retrain"]["lr"]
    return fields


def run(cmd: list[str], log: Path, threads: int) -> tuple[float, float]:
    """Run a CLI as a subprocess, its output to `log`; its wall and CPU seconds (its worker
    processes included). Stops the study on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"rank_study: {' '.join(cmd)} failed ({done.returncode}); see {log}")
    return seconds, (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


def finished(run_dir: Path) -> bool:
    return (run_dir / "best_arch.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def search(out: Path, name: str, seed: int, args) -> tuple[Path, tuple[float, float] | None]:
    """The row's search run (reused when finished) and its wall and CPU seconds (None when reused,
    those its own study measured when copied from `--searches-from`)."""
    run_dir = out / "search" / f"{name}_seed{seed}"
    if finished(run_dir):
        return run_dir, None
    source = args.searches_from / "search" / run_dir.name if args.searches_from else None
    if source and finished(source):  # a copy: nas-rank writes into <run>/rank, the other study's stays intact
        epochs = yaml.safe_load((source / ".hydra" / "config.yaml").read_text())["trainer"]["max_epochs"]
        if epochs != args.supernet_epochs:
            sys.exit(
                f"rank_study: {source} trained its supernet {epochs} epochs, not --supernet-epochs "
                f"{args.supernet_epochs}"
            )
        shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("rank"), dirs_exist_ok=True)
        row = args.searches_from / "rows" / f"{name}_seed{seed}.json"
        measured = json.loads(row.read_text()) if row.is_file() else {}
        if measured.get("search_cpu_seconds") is None:
            return run_dir, None
        return run_dir, (measured["search_seconds"], measured["search_cpu_seconds"])
    cmd = [
        sys.executable,
        "-m",
        "nas.cli.search",
        f"experiment={args.experiment}",
        "retrain.enabled=false",
        f"seed={seed}",
        f"trainer.max_epochs={args.supernet_epochs}",
        "trainer.enable_progress_bar=false",
        f"paths.data_dir={args.data_dir}",
        f"hydra.run.dir={run_dir}",
        *MECHANISMS[name],
    ]
    return run_dir, run(cmd, out / "logs" / f"search_{name}_seed{seed}.log", args.threads)


def _status_seconds(run_dir: Path) -> float | None:
    """A reused search's wall seconds, from its status.json (start to last update)."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
        return round(
            (datetime.fromisoformat(status["updated"]) - datetime.fromisoformat(status["started"])).total_seconds(), 1
        )
    except (OSError, KeyError, ValueError):
        return None


# what a row keeps of nas-rank's summary.json
SUMMARY_FIELDS = (
    "n",
    "kendall_tau",
    "kendall_p",
    "spearman_rho",
    "spearman_p",
    "top_k_overlap",
    "k",
    "top_tau",
    "top_archs",
    "regret",
    "pick_arch",
    "predictors",
    "standalone_seed_tau",
    "regret_per_seed",
)


def rank(
    out: Path, runs: list[Path], archs: Path, name: str, seed: int | str, args
) -> tuple[dict, tuple[float, float]]:
    """nas-rank of one search run, or of several as an ensemble; its summary.json and wall and CPU seconds."""
    cmd = [
        sys.executable,
        "-m",
        "nas.cli.rank",
        f"run={runs[0]}" if len(runs) == 1 else f"run=[{','.join(map(str, runs))}]",
        f"archs={archs}",
        f"seeds=[{','.join(map(str, args.seeds))}]",
        f"standalone_dir={args.standalone_dir}",
        f"budget.max_epochs={args.standalone_epochs}",
        f"budget.lr={args.standalone_lr}",
        f"paths.data_dir={args.data_dir}",
        f"calibrate.steps={args.calibrate_steps}",
        f"calibrate.lr={args.calibrate_lr}",
        f"hydra.run.dir={out / 'logs' / 'hydra'}",
        "hydra.output_subdir=null",
    ]
    if args.workers:
        cmd.append(f"workers={args.workers}")
    seconds = run(cmd, out / "logs" / f"rank_{name}_seed{seed}.log", args.threads)
    folder = runs[0] / "rank" / ("ensemble" if len(runs) > 1 else "")
    return json.loads((folder / "summary.json").read_text()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/rank_study", help="the study's folder (resumable)")
    parser.add_argument(
        "--experiment",
        default="quickstart",
        choices=list(EXPERIMENTS),
        help="the task and space: a preset of configs/experiment/",
    )
    parser.add_argument(
        "--mechanisms",
        nargs="+",
        default=SAMPLING,
        choices=list(MECHANISMS),
        help="rows of the table (default: the sharing mechanisms; add gdas darts_pc4 (_separate) for the "
        "differentiable strategies)",
    )
    parser.add_argument("--archs", type=int, default=16, help="archs ranked (a stratified pick)")
    parser.add_argument("--pick-seed", type=int, default=0, help="seed of the stratified pick")
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[0], help="one search per mechanism and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="standalone training seeds per arch")
    parser.add_argument("--supernet-epochs", type=int, default=5, help="supernet epochs of every search")
    parser.add_argument("--standalone-epochs", type=int, default=8, help="standalone epochs (nas-rank's default 8)")
    parser.add_argument("--workers", type=int, default=None, help="nas-rank workers (default: one per core)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the search (OMP_NUM_THREADS); nas-rank's workers take one each. "
        "On a machine shared with other jobs one thread is faster than two",
    )
    parser.add_argument(
        "--standalone-dir",
        default=None,
        help="standalone results, shared by every row (default <out>/standalone); point studies "
        "of other supernet budgets at one folder to train each job once",
    )
    parser.add_argument(
        "--searches-from",
        type=Path,
        default=None,
        help="another study's folder whose finished searches (same mechanisms, seeds and supernet "
        "epochs) are copied instead of run again, e.g. to rank them against another standalone budget",
    )
    parser.add_argument(
        "--calibrate-steps",
        type=int,
        default=0,
        help="nas-rank calibrate.steps: fine-tune steps of each arch's inherited weights before scoring",
    )
    parser.add_argument("--calibrate-lr", type=float, default=Calibration.lr, help="nas-rank calibrate.lr")
    parser.add_argument("--data-dir", default="data_cache", help="the tasks' data cache")
    args = parser.parse_args()

    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    for sub in ("rows", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    args.standalone_dir = Path(args.standalone_dir).resolve() if args.standalone_dir else out / "standalone"
    args.searches_from = (ROOT / args.searches_from).resolve() if args.searches_from else None
    archs = out / "archs.yaml"  # one fixed set for every row
    experiment = preset(args.experiment)
    args.standalone_lr = experiment["lr"]  # every row's nas-rank trains with it
    space = SearchSpace.from_yaml(
        ROOT / "search_spaces" / f"{experiment['space']}.yaml"
    )  # the pick is seeded: rewritten the same
    ranking.write_archs(archs, ranking.stratified_archs(space, args.archs, seed=args.pick_seed))
    settings = {
        "experiment": args.experiment,
        "task": experiment["task"],
        "space": experiment["space"],
        "standalone_lr": experiment["lr"],
        "archs": args.archs,
        "pick_seed": args.pick_seed,
        "supernet_epochs": args.supernet_epochs,
        "standalone_epochs": args.standalone_epochs,
        "search_seeds": args.search_seeds,
        "standalone_seeds": args.seeds,
        "archs_file": str(archs),
        "threads": args.threads,
        "calibrate_steps": args.calibrate_steps,
        "calibrate_lr": args.calibrate_lr,
        "standalone_dir": str(args.standalone_dir),
        "searches_from": str(args.searches_from) if args.searches_from else None,
    }
    rows = []
    changed_ops = revisions(ATTENTION.names())  # ops past their first revision, part of every row's key
    key = {
        **{k: settings[k] for k in ("supernet_epochs", "standalone_epochs", "standalone_seeds", "archs", "pick_seed")},
        "search_pick": True,
        "baselines": True,
    }  # rows older than search_pick or the free baselines: ranked again (searches and standalone jobs reused)
    if args.calibrate_steps:  # (rows of uncalibrated studies keep their key)
        key.update(calibrate_steps=args.calibrate_steps, calibrate_lr=args.calibrate_lr)
    if changed_ops:  # an op changed: its archs train again, so the row is redone
        key["op_revisions"] = changed_ops
    for seed in args.search_seeds:
        for name in args.mechanisms:
            record = out / "rows" / f"{name}_seed{seed}.json"
            if record.is_file() and json.loads(record.read_text()).get("settings") == key:
                rows.append(json.loads(record.read_text()))
                continue
            old = json.loads(record.read_text()) if record.is_file() else {}
            run_dir, search_seconds = search(out, name, seed, args)
            if not search_seconds and old.get("search_cpu_seconds") is not None:  # reused: its measured times
                search_seconds = (old["search_seconds"], old["search_cpu_seconds"])
            summary, rank_seconds = rank(out, [run_dir], archs, name, seed, args)
            row = {
                "mechanism": name,
                "overrides": MECHANISMS[name],
                "search_seed": seed,
                "run": str(run_dir),
                **{
                    k: summary[k]
                    for k in (
                        *SUMMARY_FIELDS,
                        "search_pick_regret",
                        "search_pick_standalone",
                        "search_pick_arch",
                        "search_pick_regret_per_seed",
                    )
                },
                "search_seconds": round(search_seconds[0], 1) if search_seconds else _status_seconds(run_dir),
                "search_cpu_seconds": None if search_seconds is None else round(search_seconds[1], 1),
                "rank_seconds": round(rank_seconds[0], 1),
                "rank_cpu_seconds": round(rank_seconds[1], 1),
                "standalone_trained_now": summary["trained_now"],
                "standalone_train_seconds": summary["standalone_train_seconds"],  # per job id
                "settings": key,
            }
            record.write_text(json.dumps(row, indent=2) + "\n")  # nothing lost if the study is killed
            rows.append(row)
            print(
                f"{name} seed {seed}: tau {row['kendall_tau']:.3f} regret {row['regret']:.4f} "
                f"(search's own pick: {row['search_pick_regret']:.4f}; {baselines_line(row)}) "
                f"({row['search_seconds']} s search, {row['rank_seconds']} s rank)",
                file=sys.stderr,
            )
    ensembles = (
        [] if len(args.search_seeds) < 2 else [ensemble(out, archs, name, key, args) for name in args.mechanisms]
    )
    jobs = standalone_jobs(rows, args.standalone_dir, args.standalone_epochs, args.seeds)
    settings["standalone_jobs"] = len(jobs)
    settings["standalone_train_seconds"] = round(sum(jobs.values()), 1)
    if rows and len(args.seeds) > 1:  # the noise ceiling: every row ranks the same archs' standalone results
        settings["standalone_seed_tau"] = rows[0].get("standalone_seed_tau")
    result = {"settings": settings, "rows": rows, "ensembles": ensembles}
    (out / "study.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def baselines_line(row: dict) -> str:
    """The free baselines' tau in a row's progress line."""
    return ", ".join(f"{name} tau {p['kendall_tau']:.3f}" for name, p in row["predictors"].items() if name in BASELINES)


BASELINES = ("params", "flops", "synflow", "grad_norm")  # nas-rank's free baselines, as summary.json names them


def ensemble(out: Path, archs: Path, name: str, key: dict, args) -> dict:
    """One mechanism's supernets of every search seed, ranked as an ensemble by `nas-rank run=[...]`
    against the same standalone results (reused when `<out>/rows/<name>_ensemble.json` has this key)."""
    record = out / "rows" / f"{name}_ensemble.json"
    key = {**key, "search_seeds": args.search_seeds}
    if record.is_file() and json.loads(record.read_text()).get("settings") == key:
        return json.loads(record.read_text())
    runs = [out / "search" / f"{name}_seed{seed}" for seed in args.search_seeds]
    summary, seconds = rank(out, runs, archs, name, "s" + "_".join(map(str, args.search_seeds)), args)
    row = {
        "mechanism": name,
        "search_seeds": args.search_seeds,
        "runs": [str(r) for r in runs],
        **{k: summary[k] for k in SUMMARY_FIELDS},
        "rank_seconds": round(seconds[0], 1),
        "settings": key,
    }
    record.write_text(json.dumps(row, indent=2) + "\n")
    runs_tau = ", ".join(f"{p['kendall_tau']:.3f}" for n, p in row["predictors"].items() if n.startswith("run"))
    print(
        f"{name} ensemble of seeds {args.search_seeds}: tau {row['kendall_tau']:.3f} (each run: {runs_tau}) "
        f"regret {row['regret']:.4f}",
        file=sys.stderr,
    )
    return row


def standalone_jobs(rows: list[dict], folder: Path, epochs: int, seeds: list[int]) -> dict[str, float]:
    """Training seconds of each standalone job the rows were ranked against, each job once (rows
    share most of them). Rows recorded before `nas-rank` named its jobs fall back to every result
    in `folder` of this budget and these seeds, which also counts results of older op revisions."""
    if all("standalone_train_seconds" in row for row in rows):
        return {job: seconds for row in rows for job, seconds in row["standalone_train_seconds"].items()}
    results = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")}
    return {
        job: r["train_seconds"]
        for job, r in results.items()
        if r["budget"]["max_epochs"] == epochs and r["seed"] in seeds
    }


if __name__ == "__main__":
    main()
