"""Pictures of a search for TensorBoard, drawn with numpy and Pillow only (no plotting library):
architecture weights over epochs, how often each choice trained, the Pareto front and the
chosen arch. Every picture is an (H, W, 3) uint8 array; `arch_table` is markdown text.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nas.results import pareto_front
from nas.space import LAYER_FIELDS, Arch

if TYPE_CHECKING:
    from nas.cost import Cost
    from nas.results import Candidate

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (150, 150, 150), (225, 225, 225)
FRONT_COLOUR = (31, 119, 180)  # Pareto-optimal points and the line joining them
CHOSEN_COLOUR = (214, 39, 40)  # the chosen arch, in every picture that marks it
FIELD_COLOURS = {"attention": (31, 119, 180), "heads": (255, 127, 14), "ffn_dim": (44, 160, 44),
                 "depth": (148, 103, 189)}
PALETTE = ((174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
           (196, 156, 148), (247, 182, 210), (219, 219, 141))  # layer boxes, one per attention type
# Viridis at five stops: perceptually even and brighter as the value grows, so the most
# probable choice is the brightest cell, in colour or in greyscale.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], float)


def ramp(values) -> np.ndarray:
    """Colours (..., 3) uint8 of values in [0, 1] (clipped), dark purple to yellow."""
    v = np.clip(np.asarray(values, float), 0.0, 1.0) * (len(_RAMP) - 1)
    i = np.minimum(v.astype(int), len(_RAMP) - 2)
    t = (v - i)[..., None]
    return np.round((1 - t) * _RAMP[i] + t * _RAMP[i + 1]).astype(np.uint8)


# -- architecture weights -------------------------------------------------------------------
def decision_heatmap(history: list[dict[str, list[float]]], decision_choices: dict[str, tuple],
                     layer: int | str) -> np.ndarray:
    """Architecture weights of one layer over the epochs of a differentiable search.

    Args:
        history: one dict per epoch, decision key -> probabilities over its choices
            (`DartsStrategy.history`).
        decision_choices: decision key -> choices (`SearchSpace.decisions()`).
        layer: a layer index (its attention, heads and FFN-width decisions), or "depth".

    Returns:
        (H, W, 3) uint8: one row per choice, grouped by decision, one column per epoch; the
        colour is the probability and the last epoch's value is printed at the right.
    """
    if not history:
        raise ValueError("decision_heatmap needs at least one epoch of history")
    keys = ["depth"] if layer == "depth" else [f"layer{layer}.{f}" for f in LAYER_FIELDS]
    title = "depth" if layer == "depth" else f"layer {layer}"
    font, small = _font(12), _font(11)
    epochs = len(history)
    cell_w, cell_h, gap = max(4, min(40, 480 // epochs)), 20, 8
    group_w = max(_width(font, k.split(".")[-1]) for k in keys) + 12
    choice_w = max(_width(font, str(c)) for k in keys for c in decision_choices[k]) + 8
    left, top = 8 + group_w + choice_w, 30
    rows = sum(len(decision_choices[k]) for k in keys)
    grid_h = rows * cell_h + gap * (len(keys) - 1)
    width = max(left + epochs * cell_w + 56, 360)
    img, draw = _canvas(width, top + grid_h + 86)
    _text(draw, 8, 8, f"{title}: architecture weights by epoch", font)
    _text(draw, left + epochs * cell_w + 6, top - 4, "last", small, valign="bottom", fill=GREY)

    y = top
    for key in keys:
        choices = decision_choices[key]
        probs = np.array([epoch[key] for epoch in history], float).T  # (choices, epochs)
        _text(draw, 8, y + cell_h / 2, key.split(".")[-1], font, valign="middle")
        for c, choice in enumerate(choices):
            _text(draw, left - 6, y + cell_h / 2, str(choice), font, align="right", valign="middle")
            for e in range(epochs):
                x = left + e * cell_w
                colour = tuple(int(v) for v in ramp(probs[c, e]))
                draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 2], fill=colour)
            _text(draw, left + epochs * cell_w + 6, y + cell_h / 2, f"{probs[c, -1]:.2f}", small,
                  valign="middle")
            y += cell_h
        y += gap
    y += 4 - gap
    step = _tick_step(epochs, cell_w, min_px=30)
    for e in range(0, epochs, step):
        x = left + e * cell_w + cell_w / 2
        draw.line([x, y - 2, x, y + 2], fill=BLACK)
        _text(draw, x, y + 4, str(e), small, align="center")
    _text(draw, left + epochs * cell_w / 2, y + 20, "epoch", font, align="center")
    _swatch_legend(draw, 8, y + 44, small)
    return np.asarray(img)


def _swatch_legend(draw: ImageDraw.ImageDraw, x: int, y: int, font) -> None:
    """Probability -> colour, as five swatches (0, 0.25, ..., 1)."""
    x += _text(draw, x, y + 7, "probability", font, valign="middle") + 8
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.rectangle([x, y, x + 14, y + 14], fill=tuple(int(c) for c in ramp(v)))
        x += 18 + _text(draw, x + 18, y + 7, f"{v:g}", font, valign="middle") + 10


# -- how often each choice trained ----------------------------------------------------------
def choice_counts(counts: dict[str, dict[str, int]], decision_choices: dict[str, tuple]) -> np.ndarray:
    """How often each choice of each decision was trained, as horizontal bars.

    Args:
        counts: decision key -> str(choice) -> times trained (`Strategy.counts`).
        decision_choices: decision key -> choices (`SearchSpace.decisions()`).

    Returns:
        (H, W, 3) uint8: one row of panels per layer (one panel per decision), `depth` on its
        own row first; all bars share one scale, so layers past the usual depth show shorter bars.
    """
    rows: dict[str, list[str]] = {}  # "layer0" -> ["layer0.attention", ...]; "depth" -> ["depth"]
    for key in decision_choices:
        rows.setdefault(key.split(".")[0], []).append(key)
    font, small = _font(12), _font(11)
    most = max([n for per in counts.values() for n in per.values()] + [1])
    bar_h, bar_w, label_x = 15, 140, 8
    row_label_w = max(_width(font, r) for r in rows) + 16
    choice_w = max(_width(small, str(c)) for cs in decision_choices.values() for c in cs) + 6
    count_w = _width(small, str(most)) + 6
    panel_w = choice_w + bar_w + count_w + 18
    n_cols = max(len(keys) for keys in rows.values())
    heights = [max(len(decision_choices[k]) for k in keys) * bar_h + 24 for keys in rows.values()]
    width = label_x + row_label_w + n_cols * panel_w
    img, draw = _canvas(max(width, 360), 34 + sum(heights) + 6 * len(rows))
    _text(draw, 8, 8, f"times each choice was trained (bars to scale, longest = {most})", font)

    y = 34
    for (row, keys), height in zip(rows.items(), heights):
        draw.line([label_x, y - 3, width - 8, y - 3], fill=LIGHT)
        _text(draw, label_x, y + 2, row, font)
        for col, key in enumerate(keys):
            field = key.split(".")[-1]
            x = label_x + row_label_w + col * panel_w
            if key != row:  # `depth` is its own row: its name is already the row's label
                _text(draw, x, y + 2, field, font)
            per = counts.get(key, {})
            for i, choice in enumerate(decision_choices[key]):
                n = per.get(str(choice), 0)
                by = y + 20 + i * bar_h
                _text(draw, x + choice_w - 4, by + bar_h / 2, str(choice), small, align="right", valign="middle")
                length = round(bar_w * n / most)
                if length:
                    draw.rectangle([x + choice_w, by + 2, x + choice_w + length - 1, by + bar_h - 2],
                                   fill=FIELD_COLOURS.get(field, GREY))
                _text(draw, x + choice_w + length + 4, by + bar_h / 2, str(n), small, valign="middle")
        y += height + 6
    return np.asarray(img)


# -- the Pareto front -----------------------------------------------------------------------
def pareto_plot(candidates: list[Candidate], metric_key: str, cost_key: str, chosen: Arch | None,
                higher_is_better: bool = True) -> np.ndarray:
    """Metric against cost of every evaluated candidate.

    Args:
        candidates: evaluated archs; each needs `metric_key` and `cost_key` in its metrics.
        metric_key, cost_key: e.g. "val/acc" and "cost/params".
        chosen: the arch the search returned, ringed in `CHOSEN_COLOUR` when among the candidates.
        higher_is_better: the metric's direction (False for bits per byte).

    Returns:
        (H, W, 3) uint8: grey points, the non-dominated ones in `FRONT_COLOUR` joined by the
        front's staircase, axes with ticks and labels, a legend below.
    """
    if not candidates:
        raise ValueError("pareto_plot needs at least one candidate")
    font, small = _font(12), _font(11)
    width, height = 600, 430
    box = (74, 34, width - 20, height - 84)  # plot area: left, top, right, bottom
    costs = np.array([c.metrics[cost_key] for c in candidates], float)
    values = np.array([c.metrics[metric_key] for c in candidates], float)
    x_ticks, (x0, x1) = _axis(costs)
    y_ticks, (y0, y1) = _axis(values)

    def at(cost: float, value: float) -> tuple[float, float]:
        return (box[0] + (cost - x0) / (x1 - x0) * (box[2] - box[0]),
                box[3] - (value - y0) / (y1 - y0) * (box[3] - box[1]))

    img, draw = _canvas(width, height)
    better = "higher" if higher_is_better else "lower"
    _text(draw, 8, 8, f"{metric_key} ({better} is better) against {cost_key}", font)
    draw.rectangle(box, outline=BLACK)
    for t in x_ticks:
        x = at(t, y0)[0]
        draw.line([x, box[1], x, box[3]], fill=LIGHT)
        draw.line([x, box[3], x, box[3] + 4], fill=BLACK)
        _text(draw, x, box[3] + 6, _format(t), small, align="center")
    for t in y_ticks:
        y = at(x0, t)[1]
        draw.line([box[0], y, box[2], y], fill=LIGHT)
        draw.line([box[0] - 4, y, box[0], y], fill=BLACK)
        _text(draw, box[0] - 6, y, _format(t), small, align="right", valign="middle")
    draw.rectangle(box, outline=BLACK)
    _text(draw, (box[0] + box[2]) / 2, box[3] + 24, cost_key, font, align="center")
    _vertical_text(img, 6, (box[1] + box[3]) / 2, metric_key, font)

    front = pareto_front(candidates, metric_key, cost_key, higher_is_better)
    points = [at(c.metrics[cost_key], c.metrics[metric_key]) for c in front]
    stairs = [p for a, b in zip(points, points[1:]) for p in (a, (b[0], a[1]))] + points[-1:]
    if len(stairs) > 1:
        draw.line(stairs, fill=FRONT_COLOUR, width=2)
    on_front = {id(c) for c in front}
    for c in sorted(candidates, key=lambda c: id(c) in on_front):  # front points drawn on top
        _dot(draw, at(c.metrics[cost_key], c.metrics[metric_key]), 4,
             FRONT_COLOUR if id(c) in on_front else GREY)
    marked = [c for c in candidates if c.arch == chosen]
    for c in marked[:1]:
        _ring(draw, at(c.metrics[cost_key], c.metrics[metric_key]), 9, CHOSEN_COLOUR)

    y = height - 22
    x = 74
    for label, draw_mark in (("Pareto front", lambda p: _dot(draw, p, 4, FRONT_COLOUR)),
                             ("other candidates", lambda p: _dot(draw, p, 4, GREY)),
                             ("chosen" if marked else "chosen (not among the candidates)",
                              lambda p: _ring(draw, p, 7, CHOSEN_COLOUR))):
        draw_mark((x + 6, y))
        x += 18 + _text(draw, x + 18, y, label, small, valign="middle") + 22
    return np.asarray(img)


def _axis(values: np.ndarray) -> tuple[list[float], tuple[float, float]]:
    """Ticks at 1, 2 or 5 times a power of ten, and the axis range, padded to hold every value."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12 * max(1.0, abs(hi)):  # one point, or all equal: open a window around it
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    ticks = [round(t * step, 12) for t in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    return ticks, (lo, hi)


def _format(value: float) -> str:
    """Short tick labels: 120k, 1.5M, 0.85."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.4g}"


def _dot(draw: ImageDraw.ImageDraw, at: tuple[float, float], r: float, colour) -> None:
    draw.ellipse([at[0] - r, at[1] - r, at[0] + r, at[1] + r], fill=colour)


def _ring(draw: ImageDraw.ImageDraw, at: tuple[float, float], r: float, colour) -> None:
    draw.ellipse([at[0] - r, at[1] - r, at[0] + r, at[1] + r], outline=colour, width=3)


# -- the chosen architecture ----------------------------------------------------------------
def arch_picture(arch: Arch) -> np.ndarray:
    """The arch as stacked boxes, input at the bottom and readout at the top.

    Each layer box names its attention, heads and FFN width; boxes of one attention type share
    a fill colour (in order of first use, from `PALETTE`).

    Returns:
        (H, W, 3) uint8.
    """
    font, small = _font(13), _font(12)
    box_w, box_h, gap, width = 300, 44, 22, 360
    colours: dict[str, tuple] = {}
    for layer in arch.layers:
        colours.setdefault(layer.attention, PALETTE[len(colours) % len(PALETTE)])
    height = 40 + (arch.depth + 2) * box_h + (arch.depth + 1) * gap + 12
    img, draw = _canvas(width, height)
    _text(draw, 8, 8, f"chosen architecture: depth {arch.depth}", font)
    x = (width - box_w) // 2

    def box(y: float, lines: tuple[str, str], fill) -> None:
        draw.rounded_rectangle([x, y, x + box_w, y + box_h], radius=6, fill=fill, outline=BLACK)
        _text(draw, x + box_w / 2, y + 13, lines[0], font, align="center", valign="middle")
        _text(draw, x + box_w / 2, y + 31, lines[1], small, align="center", valign="middle")

    def arrow(y_from: float, y_to: float) -> None:  # upwards, the direction data flows
        cx = x + box_w / 2
        draw.line([cx, y_from, cx, y_to + 4], fill=BLACK, width=2)
        draw.polygon([(cx, y_to), (cx - 5, y_to + 7), (cx + 5, y_to + 7)], fill=BLACK)

    y = height - 12 - box_h  # bottom up
    box(y, ("input", "token + position embedding"), LIGHT)
    for i, layer in enumerate(arch.layers):
        y -= box_h + gap
        arrow(y + box_h + gap, y + box_h)
        box(y, (f"layer {i}: {layer.attention}", f"{layer.heads} heads · FFN {layer.ffn_dim}"),
            colours[layer.attention])
    y -= box_h + gap
    arrow(y + box_h + gap, y + box_h)
    box(y, ("readout", "norm + linear head"), LIGHT)
    return np.asarray(img)


def arch_table(arch: Arch, cost: Cost | None = None, metrics: dict[str, float] | None = None) -> str:
    """The arch as a markdown table (TensorBoard's text tab renders it), then cost and metrics."""
    lines = ["| layer | attention | heads | ffn |", "|---:|---|---:|---:|"]
    lines += [f"| {i} | {l.attention} | {l.heads} | {l.ffn_dim} |" for i, l in enumerate(arch.layers)]
    lines.append("")
    if cost is not None:
        lines.append(f"**cost**: {cost.params:,} parameters, {_format(cost.flops)} FLOPs (forward), "
                     f"{cost.activation_mib:.2f} MiB of activations")
        lines.append("")
    for key, value in (metrics or {}).items():
        lines.append(f"- **{key}**: {value:.4g}")
    return "\n".join(lines).rstrip() + "\n"


# -- drawing helpers ------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def _canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (int(width), int(height)), WHITE)
    return img, ImageDraw.Draw(img)


def _width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(math.ceil(right - left))


def _text(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font, align: str = "left",
          valign: str = "top", fill=BLACK) -> int:
    """Draw `text` with (x, y) at its left/center/right and top/middle/bottom; returns its width.

    Placed by its measured box rather than Pillow's anchors, which the bitmap font lacks.
    """
    left, top, right, bottom = font.getbbox(text)
    w = right - left
    x -= left + {"left": 0, "center": w / 2, "right": w}[align]
    y -= top + {"top": 0, "middle": (bottom - top) / 2, "bottom": bottom - top}[valign]
    draw.text((x, y), text, font=font, fill=fill)
    return int(math.ceil(w))


def _vertical_text(img: Image.Image, x: float, y_center: float, text: str, font) -> None:
    """Text turned 90 degrees, reading bottom to top (a y-axis label)."""
    w = _width(font, text)
    label = Image.new("RGB", (w + 4, 18), WHITE)
    _text(ImageDraw.Draw(label), 2, 9, text, font, valign="middle")
    label = label.rotate(90, expand=True)
    img.paste(label, (int(x), int(y_center - label.height / 2)))


def _tick_step(n: int, px_per_item: float, min_px: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, ... items between ticks at least `min_px` apart."""
    step = 1
    while step * px_per_item < min_px:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2
    return step
