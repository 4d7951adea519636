"""Ranking statistics against hand-computed values, the stratified pick, the arch files."""

import csv
import itertools
import json
import math
from pathlib import Path

import pytest

from nas.errors import ConfigError
from nas.metrics import HIGHER_IS_BETTER
from nas.ranking import (
    Prediction,
    RankedArch,
    baseline,
    ensemble,
    rank_summary,
    read_archs,
    read_ranking,
    regret,
    regret_per_seed,
    seed_agreement,
    standardised,
    stratified_archs,
    supernet_order,
    top_archs,
    top_tau,
    write_archs,
    write_ranking,
)
from nas.results import Candidate, best_first
from nas.space import Arch, LayerArch, SearchSpace

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def brute_tau_b(x, y):
    """Kendall tau-b from its definition: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        ties_x += dx == 0
        ties_y += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    n0 = len(x) * (len(x) - 1) // 2
    return (concordant - discordant) / math.sqrt((n0 - ties_x) * (n0 - ties_y))


def average_ranks(x):
    return [sum(v < u for v in x) + (sum(v == u for v in x) + 1) / 2 for u in x]


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((u - ma) * (v - mb) for u, v in zip(a, b))
    return cov / math.sqrt(sum((u - ma) ** 2 for u in a) * sum((v - mb) ** 2 for v in b))


# four archs tie at 1.0 inherited, as the issue observed on the lookup task
INHERITED = [1.0, 1.0, 0.9, 1.0, 0.5, 1.0, 0.7, 0.7]
STANDALONE = [0.95, 0.97, 0.60, 0.40, 0.35, 0.80, 0.40, 0.55]


def test_tau_and_rho_with_ties_match_the_definitions():
    s = rank_summary(INHERITED, STANDALONE, k=3)
    assert s.kendall_tau == pytest.approx(brute_tau_b(INHERITED, STANDALONE), abs=1e-12)
    assert s.spearman_rho == pytest.approx(pearson(average_ranks(INHERITED), average_ranks(STANDALONE)), abs=1e-12)
    # by hand: 28 pairs, 7 tied in x, 1 tied in y (archs 3, 6); discordant: (2, 3) and (3, 7);
    # the other 18 are concordant
    assert s.kendall_tau == pytest.approx((18 - 2) / math.sqrt((28 - 7) * (28 - 1)), abs=1e-12)


def test_tau_and_rho_are_independent_of_the_metric_direction():
    up = rank_summary(INHERITED, STANDALONE, higher_is_better=True)
    down = rank_summary(INHERITED, STANDALONE, higher_is_better=False)
    assert (up.kendall_tau, up.spearman_rho) == (down.kendall_tau, down.spearman_rho)


def test_regret_and_tie_break_by_loss_then_cost():
    # archs 0, 1, 3, 5 tie at 1.0; the lowest loss is shared by 1 and 5, and 5 is cheaper
    loss = [0.20, 0.10, 0.9, 0.30, 1.2, 0.10, 0.8, 0.8]
    cost = [10, 50, 10, 10, 10, 40, 10, 10]
    s = rank_summary(INHERITED, STANDALONE, k=2, inherited_loss=loss, cost=cost)
    assert s.pick == 5
    assert s.regret == pytest.approx(0.97 - 0.80)
    assert supernet_order(INHERITED, True, loss, cost)[:4] == [5, 1, 0, 3]
    # top-2 by inherited {5, 1}, by standalone {1, 0}: one in common
    assert s.top_k_overlap == 0.5
    # without the loss the cost alone decides among the tied: 0 and 3 cost 10, 0 comes first
    assert rank_summary(INHERITED, STANDALONE, cost=cost).pick == 0
    assert rank_summary(INHERITED, STANDALONE, cost=cost).regret == pytest.approx(0.02)


@pytest.mark.parametrize("metric, expected", [("acc", [5, 1, 0, 3, 2, 6, 7, 4]), ("bpb", [4, 6, 7, 2, 5, 1, 0, 3])])
def test_supernet_order_is_the_order_a_strategy_ranks_in(metric, expected):
    # ties in the metric: at 1.0 the loss puts 1 and 5 first and the cost 5 before 1; 6 and 7
    # tie on all three and keep their order; bits per byte: lower first, the same tie-breaks
    loss = [0.20, 0.10, 0.9, 0.30, 1.2, 0.10, 0.8, 0.8]
    cost = [10, 50, 10, 10, 10, 40, 10, 10]
    candidates = [
        Candidate(
            Arch(1, (LayerArch("full", 2, i + 1),)),  # the FFN width names the index
            {f"val/{metric}": m, "val/loss": l, "cost/params": c},
        )
        for i, (m, l, c) in enumerate(zip(INHERITED, loss, cost))
    ]
    by_strategy = [c.arch.layers[0].ffn_dim - 1 for c in best_first(candidates, metric)]
    assert supernet_order(INHERITED, HIGHER_IS_BETTER[metric], loss, cost) == by_strategy == expected


def test_top_tau_is_tau_among_the_standalone_best():
    # the best quarter of the 8 by standalone: archs 1 (0.97), 0 (0.95), 5 (0.80), 2 (0.60)
    best = [1, 0, 5, 2]
    expected = brute_tau_b([INHERITED[i] for i in best], [STANDALONE[i] for i in best])
    # by hand: inherited 1.0, 1.0, 1.0, 0.9 against 0.97, 0.95, 0.80, 0.60: 6 pairs, 3 tied in
    # inherited, the other 3 concordant: 3 / sqrt(3 * 6)
    assert expected == pytest.approx(3 / math.sqrt(18))
    assert top_tau(INHERITED, STANDALONE, top=0.5) == pytest.approx(expected, abs=1e-12)
    assert top_tau(INHERITED, STANDALONE, top=4) == pytest.approx(expected, abs=1e-12)
    s = rank_summary(INHERITED, STANDALONE, top=0.5)
    assert (s.top_archs, s.top_tau) == (4, pytest.approx(expected, abs=1e-12))
    assert rank_summary(INHERITED, STANDALONE).top_archs == 2  # a quarter of 8
    # a loss: the best are the lowest; the order within them is the same one either way up
    flipped = [-v for v in STANDALONE]
    assert top_tau([-v for v in INHERITED], flipped, higher_is_better=False, top=4) == pytest.approx(expected)
    # the whole space's tau is the top tau over every arch
    assert top_tau(INHERITED, STANDALONE, top=8) == pytest.approx(brute_tau_b(INHERITED, STANDALONE))


@pytest.mark.parametrize(
    "top, n, expected", [(0.25, 16, 4), (0.25, 3, 2), (0.3, 10, 3), (0.99, 5, 5), (5, 3, 3), (2, 9, 2)]
)
def test_top_archs_is_a_fraction_rounded_up_or_a_count(top, n, expected):
    assert top_archs(n, top) == expected


@pytest.mark.parametrize("bad", [0, 1, 1.0, 1.5, -0.25, "quarter", True])
def test_top_archs_refuses_what_is_neither(bad):
    with pytest.raises(ConfigError, match=f"top_tau={bad!r}: expected a fraction"):
        top_archs(8, bad)


def test_a_baseline_ranks_by_its_score_bigger_predicting_better():
    params = [100, 300, 200, 400]
    standalone = [0.5, 0.7, 0.9, 0.6]
    b = baseline("params", params, standalone, top=2)
    assert b.kendall_tau == pytest.approx(brute_tau_b(params, standalone))
    # its pick is the biggest (arch 3, 0.6): regret 0.9 - 0.6; among the best two (archs 2 and 1)
    # 200 < 300 while 0.9 > 0.7: discordant
    assert b.regret == pytest.approx(0.3) and b.top_tau == pytest.approx(-1.0)
    # a loss (lower is better): "bigger is better" still holds when the biggest has the lowest loss
    losses = [1.0, 0.8, 0.9, 0.5]
    down = baseline("params", params, losses, higher_is_better=False, top=2)
    assert down.kendall_tau == pytest.approx(-brute_tau_b(params, losses)) and down.kendall_tau > 0
    assert down.regret == 0.0 and down.top_tau == pytest.approx(1.0)  # archs 3, 1: 400 > 300 and 0.5 < 0.8


def test_a_baseline_tie_for_the_biggest_costs_the_mean_regret_of_the_tied():
    # full and local attention of one width have the same parameter count
    b = baseline("params", [5, 9, 9, 9], [0.9, 0.8, 0.6, 0.4])
    assert b.regret == pytest.approx(((0.9 - 0.8) + (0.9 - 0.6) + (0.9 - 0.4)) / 3)
    overflowed = baseline("synflow", [1.0, math.inf, 2.0, 3.0], [0.9, 0.8, 0.6, 0.4])
    assert all(math.isnan(v) for v in overflowed.to_dict().values())


def test_the_supernet_beats_a_baseline_with_a_higher_tau_and_no_more_regret():
    supernet = Prediction("supernet", 0.5, 0.2, 0.01)
    assert supernet.beats(Prediction("params", 0.4, 0.9, 0.01))
    assert not supernet.beats(Prediction("params", 0.5, 0.0, 0.1))  # an equal tau is no win
    assert not supernet.beats(Prediction("params", 0.1, 0.0, 0.0))  # less regret: counting parameters picks better
    assert supernet.beats(Prediction("synflow", math.nan, math.nan, math.nan))
    assert not Prediction("supernet", math.nan, math.nan, 0.0).beats(Prediction("params", 0.1, 0.0, 0.1))


def test_standardised_scores_and_the_ensemble_of_runs():
    # [1, 2, 3]: mean 2, population standard deviation sqrt(2/3)
    assert standardised([1, 2, 3]) == pytest.approx([-math.sqrt(1.5), 0, math.sqrt(1.5)])
    assert standardised([0.4, 0.4, 0.4]) == [0.0, 0.0, 0.0]  # a run that cannot tell archs apart adds nothing
    z = math.sqrt(1.5)
    assert ensemble([[1, 2, 3], [10, 30, 20]]) == pytest.approx([-z, z / 2, z / 2])
    # each run's scale and offset drop out: a run near chance counts as much as a confident one
    assert ensemble([[0.12, 0.13, 0.14], [100, 300, 200]]) == pytest.approx(ensemble([[1, 2, 3], [10, 30, 20]]))
    assert ensemble([[0.5, 0.5, 0.5], [1, 3, 2]]) == pytest.approx([v / 2 for v in standardised([1, 3, 2])])
    assert ensemble([[3, 1, 2]]) == pytest.approx(standardised([3, 1, 2]))  # one run: its own order
    with pytest.raises(ConfigError, match="the same archs in each"):
        ensemble([[1, 2, 3], [1, 2]])


def test_seed_agreement_is_the_mean_tau_b_over_pairs_of_seeds():
    per_arch = list(zip(STANDALONE, INHERITED, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))  # 3 seeds, ties
    pairs = [(STANDALONE, INHERITED), (STANDALONE, [r[2] for r in per_arch]), (INHERITED, [r[2] for r in per_arch])]
    assert seed_agreement(per_arch) == pytest.approx(sum(brute_tau_b(a, b) for a, b in pairs) / 3, abs=1e-12)
    assert seed_agreement([[0.1, 0.3], [0.2, 0.2], [0.3, 0.1]]) == pytest.approx(-1.0)  # seeds rank in reverse
    assert seed_agreement([[0.5], [0.7]]) is None  # one seed: no agreement to measure


def test_regret_of_a_chosen_value():
    assert regret([0.5, 0.9, 0.7], 0.7) == pytest.approx(0.2)
    assert regret([0.5, 0.9, 0.7], 0.9) == 0.0
    assert regret([2.0, 1.5], 2.0, higher_is_better=False) == pytest.approx(0.5)


def test_regret_on_each_seed_alone():
    per_arch = [[0.9, 0.6], [0.7, 0.8], [0.5, 0.5]]  # seed 0 favours the first arch, seed 1 the second
    assert regret_per_seed(per_arch, per_arch[1]) == pytest.approx([0.2, 0.0])
    assert regret_per_seed(per_arch, [0.95, 0.4]) == pytest.approx([0.0, 0.4])  # an outside arch competes too
    assert regret_per_seed(per_arch, per_arch[2], higher_is_better=False) == [0.0, 0.0]


def test_regret_when_lower_is_better():
    s = rank_summary([3.0, 2.0, 1.0], [1.5, 1.2, 1.4], higher_is_better=False)
    assert s.pick == 2 and s.regret == pytest.approx(0.2)
    assert s.kendall_tau == pytest.approx(brute_tau_b([3.0, 2.0, 1.0], [1.5, 1.2, 1.4]))


def test_bad_statistics_input():
    with pytest.raises(ConfigError, match="standalone: expected 3 values"):
        rank_summary([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="must be finite"):
        rank_summary([1, 2, float("nan")], [1, 2, 3])


@pytest.mark.parametrize("name", ["lra", "quickstart"])
def test_stratified_pick_covers_every_op_at_every_depth(name):
    space = SearchSpace.from_yaml(SPACES / f"{name}.yaml")
    cells = len(space.attention) * len(space.depths)
    archs = stratified_archs(space, cells, seed=3)
    assert len(set(archs)) == cells
    covered = {(a.depth, layer.attention) for a in archs for layer in a.layers}
    assert covered == {(d, t) for d in space.depths for t in space.attention}
    # and every op at every layer index
    assert {(i, l.attention) for a in archs for i, l in enumerate(a.layers)} == {
        (i, t) for i in range(space.max_depth) for t in space.attention
    }
    for a in archs:
        space.validate(a)


def test_fewer_archs_than_cells_still_cover_every_type_and_depth():
    space = SearchSpace.from_yaml(SPACES / "lra.yaml")  # more types than depths
    archs = stratified_archs(space, len(space.attention), seed=0)
    assert {l.attention for a in archs for l in a.layers} == set(space.attention)
    assert {a.depth for a in archs} == set(space.depths)


def test_stratified_pick_is_seeded_and_distinct_past_one_round():
    space = SearchSpace.from_yaml(SPACES / "quickstart.yaml")  # 8 cells, 4 pure archs per depth-1 cell
    assert stratified_archs(space, 40, seed=1) == stratified_archs(space, 40, seed=1)
    assert stratified_archs(space, 40, seed=1) != stratified_archs(space, 40, seed=2)
    assert len(set(stratified_archs(space, 40, seed=1))) == 40
    with pytest.raises(ConfigError, match="exceeds the .* distinct archs of space 'quickstart'"):
        stratified_archs(space, space.size() + 1)
    with pytest.raises(ConfigError, match="archs: expected a positive number"):
        stratified_archs(space, 0)


def test_arch_files_round_trip(tmp_path):
    space = SearchSpace.from_yaml(SPACES / "quickstart.yaml")
    archs = stratified_archs(space, 5, seed=0)
    write_archs(tmp_path / "archs.yaml", archs)
    assert read_archs(tmp_path / "archs.yaml", space) == archs
    # the ranked.csv that nas-search writes (nas/cli/search.py's write_candidates)
    with open(tmp_path / "ranked.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "val/acc", "arch"])
        for i, a in enumerate(archs):
            w.writerow([i, 0.5, json.dumps(a.to_dict())])
    assert read_archs(tmp_path / "ranked.csv", space) == archs


def test_bad_arch_files(tmp_path):
    space = SearchSpace.from_yaml(SPACES / "quickstart.yaml")
    (tmp_path / "map.yaml").write_text("depth: 1\n")
    with pytest.raises(ConfigError, match="map.yaml: expected a non-empty YAML list of archs"):
        read_archs(tmp_path / "map.yaml")
    (tmp_path / "noarch.csv").write_text("rank,val/acc\n0,0.5\n")
    with pytest.raises(ConfigError, match="noarch.csv: expected a ranked.csv with an 'arch' column"):
        read_archs(tmp_path / "noarch.csv")
    (tmp_path / "badjson.csv").write_text("rank,arch\n0,{depth\n")
    with pytest.raises(ConfigError, match="badjson.csv: row 1: 'arch': malformed JSON"):
        read_archs(tmp_path / "badjson.csv")
    outside = Arch(1, (LayerArch("lsh", 2, 64),))
    write_archs(tmp_path / "outside.yaml", [outside])
    with pytest.raises(ConfigError, match="outside.yaml: arch 0: layer 0: attention 'lsh' is not in space"):
        read_archs(tmp_path / "outside.yaml", space)
    with pytest.raises(ConfigError, match="no such file"):
        read_archs(tmp_path / "missing.csv")


def test_write_ranking(tmp_path):
    archs = [
        Arch(1, (LayerArch("full", 2, 64),)),
        Arch(1, (LayerArch("local", 2, 64),)),
        Arch(1, (LayerArch("linformer", 2, 64),)),
    ]
    rows = [
        RankedArch(archs[0], 0.9, 0.3, [0.8, 0.9], {"params": 100}, {"synflow": 12.5, "run0": 0.25}),
        RankedArch(archs[1], 0.9, 0.4, [0.5, 0.6], {"params": 90}),
        RankedArch(archs[2], 0.7, 0.8, [0.95], {"params": 80}),
    ]
    write_ranking(tmp_path / "ranking.csv", rows, "acc")
    with open(tmp_path / "ranking.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [
        "arch_id",
        "cost_params",
        "score_synflow",
        "score_run0",
        "inherited_acc",
        "inherited_loss",
        "standalone_acc_seed0",
        "standalone_acc_seed1",
        "standalone_acc_mean",
        "inherited_rank",
        "standalone_rank",
        "arch",
    ]
    assert [float(r["inherited_rank"]) for r in table] == [1.5, 1.5, 3.0]
    assert [float(r["standalone_rank"]) for r in table] == [2.0, 3.0, 1.0]
    assert float(table[0]["standalone_acc_mean"]) == pytest.approx(0.85)
    assert table[2]["standalone_acc_seed1"] == ""
    assert read_archs(tmp_path / "ranking.csv") == archs
    back = read_ranking(tmp_path / "ranking.csv", "acc")
    assert [(r.arch, r.inherited, r.inherited_loss, r.standalone, r.cost, r.scores) for r in back] == [
        (r.arch, r.inherited, r.inherited_loss, r.standalone, r.cost, r.scores) for r in rows
    ]
    with pytest.raises(ConfigError, match="expected a ranking.csv with the columns arch, inherited_bpb"):
        read_ranking(tmp_path / "ranking.csv", "bpb")
    write_ranking(tmp_path / "named.csv", rows, "acc", seeds=[10, 9])  # columns named by seed, read in seed order
    with open(tmp_path / "named.csv", newline="") as f:
        assert "standalone_acc_seed10" in next(csv.reader(f))
    assert [r.standalone for r in read_ranking(tmp_path / "named.csv", "acc")] == [[0.9, 0.8], [0.6, 0.5], [0.95]]
