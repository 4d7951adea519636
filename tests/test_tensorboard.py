"""The search's TensorBoard pictures, text and hparams, read back with TensorBoard's own reader."""

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb, to_rgba
from matplotlib.patches import FancyBboxPatch, Rectangle
from PIL import Image
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import backend_context, plugin_data_pb2
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

from nas import cost, viz
from nas.evidence import Separation
from nas.model import ModelShape, ModelSpec
from nas.results import Candidate, SearchResult, pareto_front
from nas.space import Arch, LayerArch, SearchSpace
from nas.strategies.base import Strategy
from nas.strategies.darts import DartsStrategy
from nas.training.tensorboard import log_hparams, log_search
from tests.helpers import SPACES

SHAPE = ModelShape(vocab_size=20, num_classes=4, max_len=64)
EPOCHS = 4
TOP = 0.85  # the leading choice's probability in the hand-made history
TESTED = (  # a final comparison's paired tests (nas.evidence)
    Separation("layer0.attention", "full", "local", 0.91, 0.62, 1e-12, "McNemar", 1024, True),
    Separation("layer0.heads", "4", "2", 0.91, 0.9, 0.41, "McNemar", 1024, False),
)


@pytest.fixture(scope="module")
def space():
    return SearchSpace.from_yaml(SPACES / "tiny.yaml")


def make_history(space: SearchSpace) -> list[dict[str, list[float]]]:
    """Uniform everywhere, except layer 0's attention: the first choice leads at epoch 0 and the
    last choice at the last epoch."""
    history = []
    for epoch in range(EPOCHS):
        probs = {key: [1 / len(c)] * len(c) for key, c in space.decisions().items()}
        n = len(space.attention)
        if epoch in (0, EPOCHS - 1):
            probs["layer0.attention"] = [(1 - TOP) / (n - 1)] * n
            probs["layer0.attention"][0 if epoch == 0 else n - 1] = TOP
        history.append(probs)
    return history


def make_candidates(space: SearchSpace) -> list[Candidate]:
    """Evaluated archs whose accuracy grows with size, as after an evolutionary search."""
    candidates = []
    for seed in range(8):
        arch = space.sample(seed)
        params = cost.params(ModelSpec(arch, space, SHAPE))
        candidates.append(Candidate(arch, {"val/acc": 0.5 + params / 4e5 + 0.01 * (seed % 3), "cost/params": params}))
    return list({c.arch: c for c in candidates}.values())  # samples may repeat


def read_events(log_dir: Path) -> ea.EventAccumulator:
    guidance = {ea.IMAGES: 0, ea.TENSORS: 0, ea.SCALARS: 0}
    return ea.EventAccumulator(str(log_dir), size_guidance=guidance).Reload()


def decode(acc: ea.EventAccumulator, tag: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(acc.Images(tag)[-1].encoded_image_string)).convert("RGB"))


def is_colour(picture: np.ndarray, colour: str, tol: int = 40) -> np.ndarray:
    """(H, W) bool: pixels near `colour` (anti-aliasing blends the edges)."""
    rgb = np.array(to_rgb(colour)) * 255
    return np.abs(picture.astype(float) - rgb).sum(-1) < tol


def test_a_search_writes_every_picture_the_table_and_hparams(space, tmp_path):
    strategy = DartsStrategy(space)
    strategy.history = make_history(space)
    strategy.evidence = TESTED  # what `finish` finds when it compares candidates
    for seed in range(30):  # what GDAS records as it samples paths
        strategy.record(space.sample(seed))
    candidates = make_candidates(space)
    best = max(candidates, key=lambda c: c.metrics["val/acc"])
    result = SearchResult(best=best.arch, ranked=candidates, pareto=pareto_front(candidates, "val/acc", "cost/params"))
    chosen_cost = cost.estimate(ModelSpec(best.arch, space, SHAPE), seq_len=64)

    writer = SummaryWriter(str(tmp_path))
    verdict = "confidence: 1 of 2 decisions separated (paired, p < 0.05, 1024 items)"
    metrics = {"val/acc": best.metrics["val/acc"]}
    log_search(writer, space, strategy, result, chosen_cost, metrics, step=7, confidence=verdict)
    writer.close()

    assert all(p.is_file() for p in tmp_path.iterdir()), "everything in the run's own folder"
    acc = read_events(tmp_path)
    assert set(acc.Tags()["images"]) == {
        "search/arch_weights/layer0",
        "search/arch_weights/layer1",
        "search/arch_weights/depth",
        "search/choice_counts",
        "search/pareto",
        "search/chosen_arch",
    }
    assert acc.Images("search/pareto")[-1].step == 7
    picture = decode(acc, "search/chosen_arch")
    assert picture.shape == viz.to_array(viz.arch_picture(best.arch)).shape
    for layer in best.arch.layers:  # each layer's box, in its attention type's colour
        assert is_colour(picture, viz.attention_colour(layer.attention), tol=30).sum() > 500

    assert "search/chosen_arch" in acc.PluginTagToContent("text")
    table = tensor_util.make_ndarray(acc.Tensors("search/chosen_arch")[0].tensor_proto).item().decode()
    first = best.arch.layers[0]
    row = next(line for line in table.splitlines() if line.startswith("| 0 |"))
    n = len(space.attention)
    # the last epoch: TOP against (1 - TOP) / (n - 1) for attention, a tie (0) for heads and FFN
    assert (
        row == f"| 0 | {first.attention} | {first.heads} | {first.ffn_dim} | "
        f"{TOP - (1 - TOP) / (n - 1):.3f} | 0.000 | 0.000 |"
    )
    assert f"**depth**: {best.arch.depth} (margin 0.000)" in table
    assert f"{chosen_cost.params:,} parameters" in table
    # under the table: each decision's paired test, one bullet each, then the confidence line
    tested = table.split("**Winner against runner-up**")[1].strip().splitlines()
    assert tested[1:] == ["", *(f"- {s.describe()}" for s in TESTED), "", verdict]


def test_hparams_hold_strategy_options_cost_and_test_metric_in_one_entry(tmp_path):
    hparams = {
        "task": "listops",
        "space": "tiny",
        "sharing": "entangled",
        "seed": 1,
        "strategy": {"name": "darts", "arch_lr": 3e-3, "cost_weight": 0.1, "cost": None},
    }
    metrics = {"search/val_acc": 0.7, "cost/params": 12345, "retrain/test_acc": 0.75}
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("search/val_acc", 0.5, 3)  # earlier points of a tag stay
    log_hparams(writer, hparams, metrics, step=7)
    writer.close()

    acc = read_events(tmp_path)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["strategy.arch_lr"].number_value == pytest.approx(3e-3)
    assert values["strategy.cost_weight"].number_value == pytest.approx(0.1)
    assert values["strategy.name"].string_value == "darts"
    assert values["strategy.cost"].string_value == "None"
    assert values["seed"].number_value == 1 and values["task"].string_value == "listops"
    for key, value in metrics.items():
        assert acc.Scalars(key)[-1].value == pytest.approx(value) and acc.Scalars(key)[-1].step == 7
    assert [s.step for s in acc.Scalars("search/val_acc")] == [3, 7]


def test_a_sweep_shows_every_strategys_options_in_one_table(tmp_path):
    """Two runs of a --multirun sweep with different strategies, as TensorBoard's hparams
    plugin assembles them: one table holding both strategies' options and all the metrics."""
    runs = {
        "0": {"strategy": {"name": "darts", "arch_lr": 3e-3, "cost_weight": 0.1}, "seed": 0},
        "1": {"strategy": {"name": "evolution", "population": 16}, "seed": 0},
    }
    for name, hparams in runs.items():
        writer = SummaryWriter(str(tmp_path / name))
        writer.add_scalar("train/loss", 1.0, 0)
        log_hparams(writer, hparams, {"cost/params": 100.0, "retrain/test_acc": 0.5}, step=1)
        writer.close()

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    tb = base_plugin.TBContext(
        logdir=str(tmp_path),
        multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path)),
    )
    hp = backend_context.Context(tb)
    ctx = context.RequestContext()
    experiment = hp.experiment_from_metadata(
        ctx, "", True, hp.hparams_metadata(ctx, ""), hp.hparams_from_data_provider(ctx, "", None)
    )
    assert {h.name for h in experiment.hparam_infos} == {
        "strategy.name",
        "strategy.arch_lr",
        "strategy.cost_weight",
        "strategy.population",
        "seed",
    }
    assert {"cost/params", "retrain/test_acc"} <= {m.name.tag for m in experiment.metric_infos}


def test_a_ranking_strategy_gets_a_scatter_from_the_cost_model(space, tmp_path):
    """Random search and ENAS rank archs on the metric alone: the cost model supplies the costs."""
    ranked = [Candidate(space.sample(s), {"val/acc": 0.5 + s / 10}) for s in range(3)]
    plain = SummaryWriter(str(tmp_path / "plain"))
    log_search(plain, space, Strategy(space), SearchResult(best=ranked[0].arch, ranked=ranked))
    plain.close()
    assert read_events(tmp_path / "plain").Tags()["images"] == ["search/chosen_arch"]

    with_cost = SummaryWriter(str(tmp_path / "cost"))
    log_search(
        with_cost,
        space,
        Strategy(space),
        SearchResult(best=ranked[0].arch, ranked=ranked),
        cost_of=lambda arch: cost.estimate(ModelSpec(arch, space, SHAPE), seq_len=64),
    )
    with_cost.close()
    assert set(read_events(tmp_path / "cost").Tags()["images"]) == {"search/pareto", "search/chosen_arch"}


def test_heatmap_marks_the_chosen_choice_and_has_a_colour_bar(space):
    chosen = Arch(2, (LayerArch("lsh", 4, 32), LayerArch("full", 2, 64)))
    decisions = space.decisions()
    fig = viz.decision_heatmap(make_history(space), decisions, 0, chosen)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_ylabel() for ax in panels] == ["attention", "heads", "ffn_dim"]
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "probability"]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0), "one colour bar, 0 to 1"
    assert [t.get_text() for t in bars[0].get_yticklabels()][::2] == ["0.0", "0.4", "0.8"]
    picture = viz.to_array(fig)
    height = picture.shape[0]
    for ax, field in zip(panels, ("attention", "heads", "ffn_dim")):
        row = decisions[f"layer0.{field}"].index(getattr(chosen.layers[0], field))
        assert ax.images[0].get_array().shape == (len(decisions[f"layer0.{field}"]), EPOCHS)
        marks = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_edgecolor() == to_rgba(viz.CHOSEN_COLOUR)]
        assert len(marks) == 1 and marks[0].get_y() == row - 0.5
        # in the rendered picture, red lines run along the top and bottom of that row
        x_mid = ax.transData.transform((EPOCHS / 2 - 0.5, row))[0]
        for edge in (row - 0.5, row + 0.5):
            y = height - ax.transData.transform((0, edge))[1]
            assert is_colour(picture[int(y) - 2 : int(y) + 3, int(x_mid)], viz.CHOSEN_COLOUR).any()
        assert [t.get_text() for t in ax.get_yticklabels() if t.get_color() == viz.CHOSEN_COLOUR] == [
            str(decisions[f"layer0.{field}"][row])
        ]
    # epoch 0's leading choice is the top row; the last epoch's, the bottom row (cell colours)
    attention = panels[0].images[0]
    colours = attention.to_rgba(attention.get_array())  # (choices, epochs, 4)
    brightness = colours[..., :3] @ [0.299, 0.587, 0.114]
    assert brightness[:, 0].argmax() == 0 and brightness[:, -1].argmax() == len(space.attention) - 1
    assert not [
        p
        for ax in viz.decision_heatmap(make_history(space), decisions, 1, Arch(1, chosen.layers[:1])).axes
        for p in ax.patches
    ], "layer 1 is past the chosen depth: nothing to mark"


def test_margin_is_the_winner_minus_the_runner_up():
    assert viz.margins({"a": [0.2, 0.5, 0.3], "b": [0.5, 0.5], "c": [1.0]}) == pytest.approx(
        {"a": 0.2, "b": 0.0, "c": 1.0}
    )


def test_choice_count_bars_are_to_scale(space):
    counts = {"layer0.attention": {"full": 30, "local": 10}}
    fig = viz.choice_counts(counts, space.decisions())
    ax = next(ax for ax in fig.axes if ax.get_title(loc="left") == "layer0 attention")
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [30, 10] + [0] * (len(space.attention) - 2)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(space.attention)
    assert fig.axes[0].get_xlim()[1] >= 30, "one scale, wide enough for the longest bar"


def test_pareto_front_follows_the_metric_direction(space):
    a, b, c = (space.sample(s) for s in range(3))
    candidates = [
        Candidate(a, {"val/bpb": 2.0, "cost/params": 100}),
        Candidate(b, {"val/bpb": 1.5, "cost/params": 200}),
        Candidate(c, {"val/bpb": 2.5, "cost/params": 300}),
    ]
    assert [x.arch for x in pareto_front(candidates, "val/bpb", "cost/params", False)] == [a, b]
    assert [x.arch for x in pareto_front(candidates, "val/bpb", "cost/params", True)] == [a, c]


def test_pareto_plot_has_every_candidate_the_front_and_the_ring(space):
    candidates = make_candidates(space)
    chosen = candidates[3]
    fig = viz.pareto_plot(candidates, "val/acc", "cost/params", chosen.arch)
    ax = fig.axes[0]
    points = [c for c in ax.collections if c.get_label() != "chosen"]
    xy = np.concatenate([c.get_offsets() for c in points])
    assert len(xy) == len(candidates)
    assert sorted(map(tuple, xy)) == sorted((c.metrics["cost/params"], c.metrics["val/acc"]) for c in candidates)
    ring = [c for c in ax.collections if c.get_label() == "chosen"]
    assert len(ring) == 1
    assert tuple(ring[0].get_offsets()[0]) == (chosen.metrics["cost/params"], chosen.metrics["val/acc"])
    front = viz.pareto_front(candidates, "val/acc", "cost/params")
    line = next(line for line in ax.lines if line.get_label() == "Pareto front")
    assert set(zip(*line.get_data())) >= {(c.metrics["cost/params"], c.metrics["val/acc"]) for c in front}
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {viz.attention_label(c.arch) for c in candidates} | {"Pareto front", "chosen"} == legend

    outsider = Arch(1, (LayerArch("full", 2, 32),))
    unringed = viz.pareto_plot(candidates, "val/acc", "cost/params", outsider).axes[0]
    assert not [c for c in unringed.collections if c.get_label() == "chosen"]


def test_scatter_colours_points_by_group():
    fig = viz.scatter([1, 2, 3], [0.5, 0.6, 0.7], ["lsh", "full", "lsh"], xlabel="standalone", ylabel="inherited")
    ax = fig.axes[0]
    by_label = {c.get_label(): c for c in ax.collections}
    assert len(by_label["lsh"].get_offsets()) == 2 and len(by_label["full"].get_offsets()) == 1
    assert tuple(by_label["lsh"].get_facecolor()[0]) == to_rgba(viz.attention_colour("lsh"))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("standalone", "inherited")


def test_arch_picture_stacks_boxes_coloured_by_attention_with_a_legend():
    arch = Arch(3, (LayerArch("full", 2, 32), LayerArch("local", 4, 64), LayerArch("full", 4, 64)))
    ax = viz.arch_picture(arch).axes[0]
    boxes = sorted((p for p in ax.patches if isinstance(p, FancyBboxPatch)), key=lambda p: p.get_y())
    assert len(boxes) == arch.depth + 2, "input, one box per layer, readout; bottom up"
    for box, layer in zip(boxes[1:-1], arch.layers):
        assert box.get_facecolor()[:3] == pytest.approx(to_rgb(viz.attention_colour(layer.attention)))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "local"]
    texts = [t.get_text() for t in ax.texts]
    assert texts.index("layer 0: full") < texts.index("layer 1: local") and "4 heads · FFN 64" in texts


def test_arch_table_is_markdown_with_cost_metrics_and_margins(space):
    arch = Arch(2, (LayerArch("lsh", 2, 32), LayerArch("performer", 4, 64)))
    table = viz.arch_table(arch, cost.estimate(ModelSpec(arch, space, SHAPE), 64), {"val/acc": 0.8125})
    lines = table.splitlines()
    assert lines[:4] == [
        "| layer | attention | heads | ffn |",
        "|---:|---|---:|---:|",
        "| 0 | lsh | 2 | 32 |",
        "| 1 | performer | 4 | 64 |",
    ]
    assert "parameters" in table and "- **val/acc**: 0.8125" in lines
    margin = {"depth": 0.5, "layer0.attention": 0.25, "layer1.heads": 0.125}
    lines = viz.arch_table(arch, margin=margin).splitlines()
    assert lines[2:4] == ["| 0 | lsh | 2 | 32 | 0.250 | - | - |", "| 1 | performer | 4 | 64 | - | 0.125 | - |"]
    assert lines[5].startswith("**depth**: 2 (margin 0.500)")
