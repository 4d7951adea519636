"""The search's TensorBoard pictures, text and hparams, read back with TensorBoard's own reader."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

from nas import cost, viz
from nas.model import ModelShape
from nas.space import Arch, LayerArch, SearchSpace
from nas.results import Candidate, SearchResult, pareto_front
from nas.strategies.base import Strategy
from nas.strategies.darts import DartsStrategy
from nas.training.tensorboard import cost_metrics, log_hparams, log_search

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHAPE = ModelShape(vocab_size=20, num_classes=4, max_len=64)
EPOCHS = 4
TOP = 0.85  # the leading choice's probability in the hand-made history


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
        params = cost.params(arch, space, SHAPE)
        candidates.append(Candidate(arch, {"val/acc": 0.5 + params / 4e5 + 0.01 * (seed % 3),
                                           "cost/params": params}))
    return list({c.arch: c for c in candidates}.values())  # samples may repeat


def read_events(log_dir: Path) -> ea.EventAccumulator:
    guidance = {ea.IMAGES: 0, ea.TENSORS: 0, ea.SCALARS: 0}
    return ea.EventAccumulator(str(log_dir), size_guidance=guidance).Reload()


def decode(acc: ea.EventAccumulator, tag: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(acc.Images(tag)[-1].encoded_image_string)).convert("RGB"))


def test_a_search_writes_every_picture_the_table_and_hparams(space, tmp_path):
    strategy = DartsStrategy(space)
    strategy.history = make_history(space)
    for seed in range(30):  # what GDAS records as it samples paths
        strategy.record(space.sample(seed))
    candidates = make_candidates(space)
    best = max(candidates, key=lambda c: c.metrics["val/acc"])
    result = SearchResult(best=best.arch, ranked=candidates,
                          pareto=pareto_front(candidates, "val/acc", "cost/params"))
    chosen_cost = cost.estimate(best.arch, space, SHAPE, seq_len=64)

    writer = SummaryWriter(str(tmp_path))
    log_search(writer, space, strategy, result, chosen_cost, {"val/acc": best.metrics["val/acc"]}, step=7)
    hparams = {"strategy": {"name": "gdas", "arch_lr": 3e-3, "cost": None}, "trainer": {"max_epochs": 3}}
    log_hparams(writer, hparams, {"val/acc": best.metrics["val/acc"], **cost_metrics(chosen_cost)}, step=7)
    writer.close()

    assert all(p.is_file() for p in tmp_path.iterdir()), "everything in the run's own folder"
    acc = read_events(tmp_path)
    assert set(acc.Tags()["images"]) == {
        "search/arch_weights/layer0", "search/arch_weights/layer1", "search/arch_weights/depth",
        "search/choice_counts", "search/pareto", "search/chosen_arch"}
    assert decode(acc, "search/chosen_arch").shape == viz.arch_picture(best.arch).shape

    assert "search/chosen_arch" in acc.PluginTagToContent("text")
    table = tensor_util.make_ndarray(acc.Tensors("search/chosen_arch")[0].tensor_proto).item().decode()
    first = best.arch.layers[0]
    assert f"| 0 | {first.attention} | {first.heads} | {first.ffn_dim} |" in table
    assert f"{chosen_cost.params:,} parameters" in table

    content = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["strategy.arch_lr"].number_value == pytest.approx(3e-3)
    assert values["strategy.name"].string_value == "gdas"
    assert values["strategy.cost"].string_value == "None"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/acc", "cost/params", "cost/flops",
                                                            "cost/activation_mib"}
    assert acc.Scalars("cost/params")[-1].value == chosen_cost.params
    assert acc.Scalars("cost/params")[-1].step == 7


def test_a_plain_strategy_gets_only_the_chosen_arch(space, tmp_path):
    """No history, no counts, no costs among the candidates: nothing to plot but the arch."""
    ranked = [Candidate(space.sample(s), {"val/acc": 0.5 + s / 10}) for s in range(3)]
    writer = SummaryWriter(str(tmp_path))
    log_search(writer, space, Strategy(space), SearchResult(best=ranked[0].arch, ranked=ranked))
    writer.close()
    assert read_events(tmp_path).Tags()["images"] == ["search/chosen_arch"]


def test_heatmap_rows_are_choices_and_columns_epochs(space):
    picture = viz.decision_heatmap(make_history(space), space.decisions(), 0)
    assert picture.dtype == np.uint8 and picture.ndim == 3
    top_colour = viz.ramp(TOP)
    ys, xs = np.nonzero((picture == top_colour).all(-1))
    first, last = xs == xs.min(), xs == xs.max()
    assert xs.max() - xs.min() > 20, "the leading cells lie in different epochs' columns"
    assert ys[first].mean() < ys[last].mean(), "choice 0 is the top row, the last choice lower down"

    # In epoch 0's column, the leading choice's cell is the brightest of the column's cells.
    column = picture[:, xs.min()].astype(float)
    palette = viz.ramp(np.linspace(0, 1, 256)).astype(float)
    in_cells = np.abs(column[:, None] - palette[None]).sum(-1).min(1) < 4
    brightness = column @ [0.299, 0.587, 0.114]
    brightest = np.nonzero(in_cells)[0][brightness[in_cells].argmax()]
    assert (picture[brightest, xs.min()] == top_colour).all()


def test_choice_count_bars_are_to_scale(space):
    counts = {"layer0.attention": {"full": 30, "local": 10}}
    picture = viz.choice_counts(counts, space.decisions())
    blue = (picture == viz.FIELD_COLOURS["attention"]).all(-1)
    lengths = {int(n) for n in blue.sum(1) if n}
    assert len(lengths) == 2
    assert max(lengths) / min(lengths) == pytest.approx(3, rel=0.05)


def test_pareto_front_follows_the_metric_direction(space):
    a, b, c = (space.sample(s) for s in range(3))
    candidates = [Candidate(a, {"val/bpb": 2.0, "cost/params": 100}),
                  Candidate(b, {"val/bpb": 1.5, "cost/params": 200}),
                  Candidate(c, {"val/bpb": 2.5, "cost/params": 300})]
    assert [x.arch for x in pareto_front(candidates, "val/bpb", "cost/params", False)] == [a, b]
    assert [x.arch for x in pareto_front(candidates, "val/bpb", "cost/params", True)] == [a, c]


def test_pareto_plot_rings_the_chosen_arch(space):
    candidates = sorted(make_candidates(space), key=lambda c: c.metrics["cost/params"])
    cheap, costly = candidates[0].arch, candidates[-1].arch
    outsider = Arch(1, (LayerArch("full", 2, 32),))
    assert outsider not in [c.arch for c in candidates]

    def chosen_pixels(chosen: Arch) -> tuple[np.ndarray, np.ndarray]:
        picture = viz.pareto_plot(candidates, "val/acc", "cost/params", chosen)
        return np.nonzero((picture == viz.CHOSEN_COLOUR).all(-1))

    _, x_cheap = chosen_pixels(cheap)
    _, x_costly = chosen_pixels(costly)
    _, x_none = chosen_pixels(outsider)
    assert x_costly.mean() > x_cheap.mean() + 50, "the ring sits on the chosen point"
    assert len(x_none) < len(x_cheap), "an arch not plotted is not ringed (only the legend's ring)"


def test_arch_picture_stacks_layers_from_the_input_up():
    arch = Arch(2, (LayerArch("full", 2, 32), LayerArch("local", 4, 64)))
    picture = viz.arch_picture(arch)
    ys_first, _ = np.nonzero((picture == viz.PALETTE[0]).all(-1))
    ys_second, _ = np.nonzero((picture == viz.PALETTE[1]).all(-1))
    assert len(ys_first) and len(ys_second)
    assert ys_first.mean() > ys_second.mean(), "layer 0 is drawn below layer 1"
    same = viz.arch_picture(Arch(2, (LayerArch("full", 2, 32), LayerArch("full", 4, 64))))
    assert not (same == viz.PALETTE[1]).all(-1).any(), "one colour per attention type"


def test_arch_table_is_markdown_with_cost_and_metrics(space):
    arch = Arch(2, (LayerArch("lsh", 2, 32), LayerArch("performer", 4, 64)))
    table = viz.arch_table(arch, cost.estimate(arch, space, SHAPE, 64), {"val/acc": 0.8125})
    lines = table.splitlines()
    assert lines[:4] == ["| layer | attention | heads | ffn |", "|---:|---|---:|---:|",
                         "| 0 | lsh | 2 | 32 |", "| 1 | performer | 4 | 64 |"]
    assert "parameters" in table and "- **val/acc**: 0.8125" in lines
