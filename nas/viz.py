"""Pictures of a search for TensorBoard, drawn with matplotlib: architecture weights over epochs,
how often each choice trained, metric against cost, the chosen arch; `arch_table` is markdown.

Every picture is a `matplotlib.figure.Figure` made without pyplot (no global figure state), for
`SummaryWriter.add_figure`, which renders it with the Agg backend; `to_array` does the same.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Rectangle

from nas.results import pareto_front
from nas.space import LAYER_FIELDS, Arch

if TYPE_CHECKING:
    from nas.cost import Cost
    from nas.results import Candidate

CHOSEN_COLOUR = "#d62728"  # the chosen arch or choice, in every picture that marks it
FRONT_COLOUR = "#222222"  # the line joining the Pareto front
FIELD_COLOURS = {"attention": "#1f77b4", "heads": "#ff7f0e", "ffn_dim": "#2ca02c", "depth": "#9467bd"}
# One colour per attention type, fixed so that a type looks the same in every picture and run;
# grey is kept for archs that mix types (and for points without groups).
_KNOWN = {
    "full": "#1f77b4",
    "local": "#ff7f0e",
    "linformer": "#2ca02c",
    "performer": "#9467bd",
    "lsh": "#8c564b",
    "synthesizer": "#e377c2",
    "mixed": "#7f7f7f",
}
_OTHERS = ("#bcbd22", "#17becf", "#ff9896", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d")
HEATMAP = "viridis"  # perceptually even, brighter as the probability grows (also in greyscale)


def attention_colour(name: str) -> str:
    """The colour of an attention type, or grey for "mixed" (a new type gets a stable other one)."""
    return _KNOWN.get(name) or _OTHERS[zlib.crc32(name.encode()) % len(_OTHERS)]


def attention_label(arch: Arch) -> str:
    """The arch's attention type, or "mixed" when its layers use several (a scatter's groups)."""
    kinds = {layer.attention for layer in arch.layers}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def to_array(fig: Figure) -> np.ndarray:
    """The figure rendered by Agg as (H, W, 3) uint8, as `add_figure` renders it."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# -- architecture weights -------------------------------------------------------------------
def decision_heatmap(
    history: list[dict[str, list[float]]],
    decision_choices: dict[str, tuple],
    layer: int | str,
    chosen: Arch | None = None,
) -> Figure:
    """Architecture weights of one layer (or of depth) over the epochs of a search.

    Args:
        history: one dict per epoch, decision key -> probabilities over its choices
            (`DartsStrategy.history`, `EnasStrategy.history`).
        decision_choices: decision key -> choices (`SearchSpace.decisions()`).
        layer: a layer index (its attention, heads and FFN-width decisions), or "depth".
        chosen: the arch the search returned; its choice in each decision is outlined in
            `CHOSEN_COLOUR` (a layer past its depth has none).

    Returns:
        One panel per decision: rows are choices, columns epochs, the colour the probability
        (shared colour bar, 0 to 1); the last epoch's values are printed at the right.
    """
    if not history:
        raise ValueError("decision_heatmap needs at least one epoch of history")
    keys = ["depth"] if layer == "depth" else [f"layer{layer}.{f}" for f in LAYER_FIELDS]
    picks = _chosen_choices(chosen) if chosen is not None else {}
    sizes = [len(decision_choices[k]) for k in keys]
    fig = Figure(figsize=(7, 1.5 + 0.32 * sum(sizes) + 0.3 * len(keys)), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False, height_ratios=sizes)[:, 0]
    for ax, key in zip(axes, keys):
        choices = decision_choices[key]
        probs = np.array([epoch[key] for epoch in history], float).T  # (choices, epochs)
        image = ax.imshow(probs, cmap=HEATMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(choices)), [str(c) for c in choices])
        ax.set_ylabel(key.split(".")[-1])
        right = ax.secondary_yaxis("right")  # the last epoch's values, next to their rows
        right.set_yticks(range(len(choices)), [f"{p:.2f}" for p in probs[:, -1]])
        if key in picks and picks[key] in choices:
            row = choices.index(picks[key])
            ax.add_patch(
                Rectangle(
                    (-0.5, row - 0.5),
                    probs.shape[1],
                    1,
                    fill=False,
                    edgecolor=CHOSEN_COLOUR,
                    linewidth=2.5,
                    label="chosen",
                )
            )
            ax.get_yticklabels()[row].set(color=CHOSEN_COLOUR, fontweight="bold")
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    title = "depth" if layer == "depth" else f"layer {layer}"
    fig.suptitle(f"{title}: architecture weights by epoch\n(right: last epoch's values; outlined: the chosen arch)")
    fig.colorbar(image, ax=list(axes), label="probability", pad=0.08)
    return fig


def _chosen_choices(arch: Arch) -> dict[str, object]:
    """Decision key -> the arch's choice (as `SearchSpace.choices_of`, without the space)."""
    out: dict[str, object] = {"depth": arch.depth}
    for i, layer in enumerate(arch.layers):
        out.update({f"layer{i}.{f}": getattr(layer, f) for f in LAYER_FIELDS})
    return out


def margins(probabilities: dict[str, Sequence[float]]) -> dict[str, float]:
    """How far each decision's most probable choice leads the runner-up.

    Args:
        probabilities: decision key -> probabilities over its choices (one epoch of a
            strategy's `history`: DARTS, GDAS, ENAS).

    Returns:
        decision key -> winner's probability minus the runner-up's (1.0 for a single choice).
    """
    out = {}
    for key, probs in probabilities.items():
        top = sorted(probs, reverse=True) + [0.0]
        out[key] = float(top[0] - top[1])
    return out


# -- how often each choice trained ----------------------------------------------------------
def choice_counts(counts: dict[str, dict[str, int]], decision_choices: dict[str, tuple]) -> Figure:
    """How often each choice of each decision was trained, as horizontal bars.

    Args:
        counts: decision key -> str(choice) -> times trained (`Strategy.counts`).
        decision_choices: decision key -> choices (`SearchSpace.decisions()`).

    Returns:
        One row of panels per layer (one panel per field), `depth` first; all bars share one
        scale, so layers past the usual depth show shorter bars.
    """
    rows: dict[str, list[str]] = {}  # "layer0" -> ["layer0.attention", ...]; "depth" -> ["depth"]
    for key in decision_choices:
        rows.setdefault(key.split(".")[0], []).append(key)
    n_cols = max(len(keys) for keys in rows.values())
    tallest = max(len(c) for c in decision_choices.values())
    fig = Figure(figsize=(3.2 * n_cols, 0.6 + len(rows) * (0.25 * tallest + 0.5)), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, sharex=True, squeeze=False)
    most = max([n for per in counts.values() for n in per.values()] + [1])
    for r, (row, keys) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(keys):
                ax.set_axis_off()
                continue
            key, field = keys[c], keys[c].split(".")[-1]
            labels = [str(choice) for choice in decision_choices[key]]
            values = [counts.get(key, {}).get(label, 0) for label in labels]
            # bars at positions, labels as ticks: numeric choices ("64") stay categories
            bars = ax.barh(range(len(labels)), values, color=FIELD_COLOURS.get(field, "grey"))
            ax.set_yticks(range(len(labels)), labels)
            ax.bar_label(bars, padding=2, fontsize=8)
            ax.invert_yaxis()  # first choice on top, as in the heatmaps
            ax.set_title(key if row == "depth" else f"{row} {field}", fontsize=9, loc="left")
            ax.tick_params(labelsize=8)
    axes[0, 0].set_xlim(0, most * 1.15)  # room for the count labels
    fig.suptitle("times each choice was trained")
    return fig


# -- metric against cost --------------------------------------------------------------------
def scatter(
    x: Sequence[float],
    y: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    line: Sequence[tuple[float, float]] = (),
    line_label: str = "",
    ring: int | None = None,
    ring_label: str = "chosen",
) -> Figure:
    """Points coloured by group, with an optional joining line and one ringed point.

    Used for metric against cost; `nas-rank` can use it for inherited against standalone
    metric, grouped by `attention_label`.

    Args:
        x, y: one value per point.
        groups: one label per point; attention types get their `attention_colour`.
        line: (x, y) vertices drawn as a staircase, e.g. a Pareto front sorted by x.
        ring: index of the point to ring in `CHOSEN_COLOUR`.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    groups = list(groups) if groups is not None else ["mixed"] * len(x)
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    if len(line):
        lx, ly = zip(*line)
        ax.step(lx, ly, where="post", color=FRONT_COLOUR, linewidth=1.5, label=line_label, zorder=2)
    for group in sorted(set(groups), key=lambda g: (g == "mixed", g)):
        at = np.array([g == group for g in groups])
        ax.scatter(
            x[at], y[at], s=36, color=attention_colour(group), label=group, zorder=3, edgecolors="white", linewidths=0.5
        )
    if ring is not None:
        ax.scatter(
            [x[ring]],
            [y[ring]],
            s=220,
            facecolors="none",
            edgecolors=CHOSEN_COLOUR,
            linewidths=2.5,
            label=ring_label,
            zorder=4,
        )
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_formatter(lambda v, _: _format(v))  # 12k, not 1.2 with "1e4" in a corner
    ax.yaxis.set_major_formatter(lambda v, _: _format(v))
    ax.legend(fontsize=8, loc="best")
    return fig


# -- the Pareto front -----------------------------------------------------------------------
def pareto_plot(
    candidates: list[Candidate], metric_key: str, cost_key: str, chosen: Arch | None, higher_is_better: bool = True
) -> Figure:
    """Metric against cost of every evaluated candidate, the Pareto front joined.

    Args:
        candidates: evaluated archs; each needs `metric_key` and `cost_key` in its metrics.
        metric_key, cost_key: e.g. "val/acc" and "cost/params".
        chosen: the arch the search returned, ringed when among the candidates.
        higher_is_better: the metric's direction (False for bits per byte).

    Returns:
        One point per candidate, coloured by attention type (`attention_label`).
    """
    if not candidates:
        raise ValueError("pareto_plot needs at least one candidate")
    front = pareto_front(candidates, metric_key, cost_key, higher_is_better)
    archs = [c.arch for c in candidates]
    better = "higher" if higher_is_better else "lower"
    return scatter(
        [c.metrics[cost_key] for c in candidates],
        [c.metrics[metric_key] for c in candidates],
        [attention_label(a) for a in archs],
        xlabel=cost_key,
        ylabel=f"{metric_key} ({better} is better)",
        title=f"{len(candidates)} evaluated archs: {metric_key} against {cost_key}",
        line=[(c.metrics[cost_key], c.metrics[metric_key]) for c in front],
        line_label="Pareto front",
        ring=archs.index(chosen) if chosen in archs else None,
    )


# -- the chosen architecture ----------------------------------------------------------------
def arch_picture(arch: Arch) -> Figure:
    """The arch as stacked boxes, input at the bottom and readout at the top.

    Each layer box names its attention, heads and FFN width and is filled with its attention
    type's `attention_colour`; the legend lists the types present.
    """
    n = arch.depth + 2
    fig = Figure(figsize=(5, 0.9 + 0.75 * n), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlim=(0, 1), ylim=(-0.2, n - 0.1))
    ax.set_axis_off()
    boxes = [("input", "token + position embedding", "#e1e1e1")]
    boxes += [
        (f"layer {i}: {l.attention}", f"{l.heads} heads · FFN {l.ffn_dim}", attention_colour(l.attention))
        for i, l in enumerate(arch.layers)
    ]
    boxes.append(("readout", "norm + linear head", "#e1e1e1"))
    for y, (name, detail, colour) in enumerate(boxes):
        ax.add_patch(
            FancyBboxPatch(
                (0.1, y), 0.8, 0.62, boxstyle="round,pad=0,rounding_size=0.05", facecolor=colour, edgecolor="#1e1e1e"
            )
        )
        ink = "white" if np.dot(to_rgb(colour), (0.299, 0.587, 0.114)) < 0.5 else "black"
        ax.text(0.5, y + 0.42, name, ha="center", va="center", fontsize=11, fontweight="bold", color=ink)
        ax.text(0.5, y + 0.18, detail, ha="center", va="center", fontsize=9, color=ink)
        if y:  # data flows upwards
            ax.annotate("", (0.5, y), (0.5, y - 0.38), arrowprops={"arrowstyle": "-|>", "color": "#1e1e1e"})
    kinds = dict.fromkeys(l.attention for l in arch.layers)
    ax.legend(
        handles=[
            Line2D([], [], marker="s", linestyle="", markersize=10, color=attention_colour(k), label=k) for k in kinds
        ],
        title="attention",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    fig.suptitle(f"chosen architecture: depth {arch.depth}")
    return fig


def arch_table(
    arch: Arch,
    cost: Cost | None = None,
    metrics: dict[str, float] | None = None,
    margin: dict[str, float] | None = None,
) -> str:
    """The arch as a markdown table (TensorBoard's text tab renders it), then cost and metrics.

    Args:
        margin: decision key -> the final distribution's winner minus runner-up probability
            (`margins`); adds a column per field and the depth's margin.
    """
    fields = ("attention", "heads", "ffn")
    lines = ["| layer | attention | heads | ffn |", "|---:|---|---:|---:|"]
    if margin:
        lines = [
            "| layer | attention | heads | ffn | margin: " + " | margin: ".join(fields) + " |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
    for i, l in enumerate(arch.layers):
        row = f"| {i} | {l.attention} | {l.heads} | {l.ffn_dim} |"
        if margin:
            row += "".join(f" {_margin(margin, f'layer{i}.{f}')} |" for f in LAYER_FIELDS)
        lines.append(row)
    lines.append("")
    if margin:
        lines += [
            f"**depth**: {arch.depth} (margin {_margin(margin, 'depth')}). A margin is the final "
            "distribution's most probable choice minus the runner-up.",
            "",
        ]
    if cost is not None:
        lines += [
            f"**cost**: {cost.params:,} parameters, {_format(cost.flops)} FLOPs (forward), "
            f"{cost.activation_mib:.2f} MiB of activations",
            "",
        ]
    for key, value in (metrics or {}).items():
        lines.append(f"- **{key}**: {value:.4g}")
    return "\n".join(lines).rstrip() + "\n"


def _margin(margin: dict[str, float], key: str) -> str:
    return f"{margin[key]:.3f}" if key in margin else "-"  # early in a search margins are small


def _format(value: float) -> str:
    """Short numbers: 120k, 1.5M, 0.85."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"
