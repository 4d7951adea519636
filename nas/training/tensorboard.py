"""What a user sees of a search in TensorBoard beyond the scalars: architecture weights over
time, how often each choice trained, metric against cost, the chosen arch, and an hparams entry.

All writers take a `torch.utils.tensorboard.SummaryWriter`, which is what Lightning's
`TensorBoardLogger.experiment` is, so everything lands in the run's own event file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tensorboard.plugins.text.summary_v2 import text_pb
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from nas import viz
from nas.cost import Cost
from nas.evidence import Separation
from nas.metrics import HIGHER_IS_BETTER
from nas.results import Candidate, SearchResult
from nas.space import Arch, SearchSpace
from nas.strategies.base import Strategy


def log_search(
    writer: SummaryWriter,
    space: SearchSpace,
    strategy: Strategy,
    result: SearchResult,
    cost: Cost | None = None,
    metrics: dict[str, float] | None = None,
    step: int = 0,
    cost_of: Callable[[Arch], Cost] | None = None,
    confidence: str = "",
) -> None:
    """Write the pictures and the table of a finished search.

    Tags: `search/arch_weights/layer<i>` and `search/arch_weights/depth` (reports with a
    `history` of architecture weights: DARTS, GDAS, ENAS), `search/choice_counts` (strategies
    that count trained choices), `search/pareto` (metric against cost of the ranked and
    Pareto candidates, whatever the strategy), and `search/chosen_arch` both as a picture and
    as a markdown table in the text tab (with each decision's margin where there is a history),
    followed by each decision's paired test of winner against runner-up (the report's
    `evidence`) and the confidence line.

    Args:
        strategy: the finished strategy: its `report()` and `counts`.
        cost: the chosen arch's cost, shown under its table.
        metrics: the chosen arch's metrics (e.g. {"val/acc": 0.9}), shown under its table.
        step: the global step to file them under.
        cost_of: the cost of an arch (e.g. `cost.estimate` at the task's shape and length),
            for candidates whose metrics hold no `cost/...` (random, SPOS, ENAS rank without).
        confidence: the line on how sure the pick is (`nas.evidence.confidence`), shown last.
    """
    decisions = space.decisions()
    report = strategy.report()
    history = list(report.history)
    if history:
        for layer in [*range(space.max_depth), "depth"]:
            name = "depth" if layer == "depth" else f"layer{layer}"
            writer.add_figure(
                f"search/arch_weights/{name}", viz.decision_heatmap(history, decisions, layer, chosen=result.best), step
            )
    if any(strategy.counts.values()):
        writer.add_figure("search/choice_counts", viz.choice_counts(strategy.counts, decisions), step)
    candidates = _unique(result.ranked + result.pareto)
    if cost_of is not None:
        candidates = [
            c
            if any(k.startswith("cost/") for k in c.metrics)
            else Candidate(c.arch, {**c.metrics, **cost_metrics(cost_of(c.arch))})
            for c in candidates
        ]
    keys = _plot_keys(candidates)
    if keys is not None:
        metric_key, cost_key = keys
        plotted = [c for c in candidates if metric_key in c.metrics and cost_key in c.metrics]
        higher = HIGHER_IS_BETTER.get(metric_key.split("/")[-1], True)
        figure = viz.pareto_plot(plotted, metric_key, cost_key, result.best, higher)
        writer.add_figure("search/pareto", figure, step)
    writer.add_figure("search/chosen_arch", viz.arch_picture(result.best), step)
    margin = report.margins if history else None
    text = viz.arch_table(result.best, cost, metrics, margin) + evidence_text(report.evidence, confidence)
    # Not writer.add_text, which files the text under "<tag>/text_summary".
    _write(writer, text_pb("search/chosen_arch", text), step)
    writer.flush()


def evidence_text(evidence: tuple[Separation, ...], confidence: str = "") -> str:
    """Markdown for the text tab, to follow the arch table: one bullet per tested decision
    (`Separation.describe`), then the confidence line; empty without either."""
    parts = []
    if evidence:
        parts.append("**Winner against runner-up** (paired test on the same validation items):")
        parts.append("\n".join(f"- {s.describe()}" for s in evidence))
    if confidence:
        parts.append(confidence)
    return "".join(f"\n\n{part}" for part in parts)


def log_hparams(writer: SummaryWriter, hparams: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
    """This run's entry in TensorBoard's hparams tab: its settings and its final metrics.

    Call it once per run, at the end (after retraining), so that the search's metrics, the
    chosen arch's cost and the retrained test metric sit in one entry. Only the session is
    written, not an experiment summary: TensorBoard then builds the table from every run's
    session, so a `--multirun` sweep over strategies shows each strategy's own options
    side by side (with an experiment summary per run it would show one run's hparams only).
    Written into `writer`'s own event file, not with `writer.add_hparams`, which would open a
    sub-run folder and split the run in two.

    Args:
        hparams: nested settings, e.g. {"task": "listops", "space": "lra", "sharing": "entangled",
            "seed": 0, "strategy": {"name": "darts", "arch_lr": 3e-3, "penalty": {"weight": 0.1}, ...}};
            flattened to dotted keys such as `strategy.arch_lr`; values that are not numbers,
            strings or booleans (None, lists) as text.
        metrics: final values, e.g. {"search/val_acc": 0.8, "cost/params": 12345,
            "retrain/test_acc": 0.91}; also written as scalars, which is where the hparams tab
            reads them.
        step: at or after the run's last step: TensorBoard drops the points of a tag that lie
            after a point written out of order.
    """
    flat = {key: _hparam_value(value) for key, value in _flatten(hparams).items()}
    metrics = {key: float(value) for key, value in metrics.items()}
    for key, value in metrics.items():
        writer.add_scalar(key, value, step)
    _, session_start, session_end = hparams_summary(flat, metrics)
    for summary in (session_start, session_end):
        _write(writer, summary, step)
    writer.flush()


def log_rank(
    writer: SummaryWriter,
    archs: list[Arch],
    inherited: list[float],
    standalone: list[float],
    summary: dict[str, float],
    metric: str,
    table: str,
    step: int = 0,
) -> None:
    """Write a `nas-rank` measurement: `rank/inherited_vs_standalone` (one point per arch,
    coloured by attention type, the supernet's pick ringed), its figures as `rank/<name>`
    scalars, and `rank/table` (markdown) in the text tab.

    Args:
        archs, inherited, standalone: one entry per arch (standalone: the mean over seeds).
        summary: the figures, e.g. {"kendall_tau": 0.7, "regret": 0.01, "pick": 3, ...};
            `pick` is the index of the ringed arch.
        metric: the task's metric name ("acc"), for the axes.
        table: markdown shown in the text tab.
    """
    figure = viz.scatter(
        inherited,
        standalone,
        [viz.attention_label(a) for a in archs],
        xlabel=f"inherited val/{metric} (supernet weights)",
        ylabel=f"standalone val/{metric} (trained from scratch)",
        title=f"{len(archs)} archs: Kendall tau {summary['kendall_tau']:.3f}, regret {summary['regret']:.4f}",
        ring=int(summary["pick"]),
        ring_label="supernet's pick",
    )
    writer.add_figure("rank/inherited_vs_standalone", figure, step)
    for key, value in summary.items():
        if key != "pick":
            writer.add_scalar(f"rank/{key}", float(value), step)
    _write(writer, text_pb("rank/table", table), step)
    writer.flush()


def cost_metrics(cost: Cost) -> dict[str, float]:
    """A cost as metrics named like the rest (`cost/params`, ...), e.g. for `log_hparams`."""
    return {"cost/params": cost.params, "cost/flops": cost.flops, "cost/activation_mib": cost.activation_mib}


def _write(writer: SummaryWriter, summary, step: int) -> None:
    file_writer = writer._get_file_writer()  # as Lightning does; reopens a closed writer
    if file_writer is not None:  # None off rank zero, where Lightning hands out a dummy writer
        file_writer.add_summary(summary, step)


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    """The first candidate of each arch: the Pareto list repeats some of the ranked ones."""
    first: dict = {}
    for c in candidates:
        first.setdefault(c.arch, c)
    return list(first.values())


def _plot_keys(candidates: list[Candidate]) -> tuple[str, str] | None:
    """(metric, cost) to plot: the first non-cost metric and `cost/params` or the first cost."""
    keys = list(dict.fromkeys(k for c in candidates for k in c.metrics))
    costs = [k for k in keys if k.startswith("cost/")]
    others = [k for k in keys if not k.startswith("cost/")]
    if not costs or not others:
        return None
    return others[0], "cost/params" if "cost/params" in costs else costs[0]


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _hparam_value(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)
