"""What a user sees of a search in TensorBoard beyond the scalars: architecture weights over
time, how often each choice trained, the Pareto front, the chosen arch, and an hparams entry.

All writers take a `torch.utils.tensorboard.SummaryWriter`, which is what Lightning's
`TensorBoardLogger.experiment` is, so everything lands in the run's own event file.
"""
from __future__ import annotations

from typing import Any

from tensorboard.plugins.text.summary_v2 import text_pb
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from nas import viz
from nas.cost import Cost
from nas.space import SearchSpace
from nas.metrics import HIGHER_IS_BETTER
from nas.results import Candidate, SearchResult
from nas.strategies.base import Strategy


def log_search(writer: SummaryWriter, space: SearchSpace, strategy: Strategy, result: SearchResult,
               cost: Cost | None = None, metrics: dict[str, float] | None = None, step: int = 0) -> None:
    """Write the pictures and the table of a finished search.

    Tags: `search/arch_weights/layer<i>` and `search/arch_weights/depth` (strategies with a
    `history` of architecture weights: DARTS, GDAS), `search/choice_counts` (strategies that
    count trained choices), `search/pareto` (candidates with a `cost/...` metric), and
    `search/chosen_arch` both as an image and as a markdown table in the text tab.

    Args:
        cost: the chosen arch's cost, shown under its table.
        metrics: the chosen arch's metrics (e.g. {"val/acc": 0.9}), shown under its table.
        step: the global step to file them under.
    """
    decisions = space.decisions()
    history = getattr(strategy, "history", None)
    if history:
        for i in range(space.max_depth):
            _image(writer, f"search/arch_weights/layer{i}", viz.decision_heatmap(history, decisions, i), step)
        _image(writer, "search/arch_weights/depth", viz.decision_heatmap(history, decisions, "depth"), step)
    if any(strategy.counts.values()):
        _image(writer, "search/choice_counts", viz.choice_counts(strategy.counts, decisions), step)
    candidates = _unique(result.ranked + result.pareto)
    keys = _plot_keys(candidates)
    if keys is not None:
        metric_key, cost_key = keys
        plotted = [c for c in candidates if metric_key in c.metrics and cost_key in c.metrics]
        higher = HIGHER_IS_BETTER.get(metric_key.split("/")[-1], True)
        _image(writer, "search/pareto", viz.pareto_plot(plotted, metric_key, cost_key, result.best, higher), step)
    _image(writer, "search/chosen_arch", viz.arch_picture(result.best), step)
    # Not writer.add_text, which files the text under "<tag>/text_summary".
    _write(writer, text_pb("search/chosen_arch", viz.arch_table(result.best, cost, metrics)), step)
    writer.flush()


def log_hparams(writer: SummaryWriter, hparams: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
    """One entry of TensorBoard's hparams tab: this run's settings and its final metrics.

    Written into `writer`'s own event file with `summary.hparams`, not `writer.add_hparams`,
    which would open a sub-run folder and split the run in two in TensorBoard.

    Args:
        hparams: nested settings (a resolved Hydra config as a dict); flattened to dotted keys
            such as `strategy.arch_lr`, values that are not numbers, strings or booleans as text.
        metrics: final values, e.g. {"val/acc": 0.91, "cost/params": 12345}; also written as
            scalars, which is where the hparams tab reads them.
        step: at or after the run's last step: TensorBoard drops the points of a tag that lie
            after a point written out of order.
    """
    flat = {key: _hparam_value(value) for key, value in _flatten(hparams).items()}
    metrics = {key: float(value) for key, value in metrics.items()}
    for key, value in metrics.items():
        writer.add_scalar(key, value, step)
    for summary in hparams_summary(flat, metrics):
        _write(writer, summary, step)
    writer.flush()


def cost_metrics(cost: Cost) -> dict[str, float]:
    """A cost as metrics named like the rest (`cost/params`, ...), e.g. for `log_hparams`."""
    return {"cost/params": cost.params, "cost/flops": cost.flops, "cost/activation_mib": cost.activation_mib}


def _image(writer: SummaryWriter, tag: str, picture, step: int) -> None:
    writer.add_image(tag, picture, step, dataformats="HWC")


def _write(writer: SummaryWriter, summary, step: int) -> None:
    writer._get_file_writer().add_summary(summary, step)  # as Lightning does; reopens a closed writer


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
