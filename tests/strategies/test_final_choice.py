"""Every strategy's final choice on a toy space whose optimum is known (`planted.ScoredSupernet`
scores each arch by `toy_score` through the real evaluation): the best arch by the metric in its
own direction, never by the cost or the loss. Evolution's Pareto front equals the front found by
enumerating the space, and every value it tells Optuna is the measured metric and the cost."""

from types import SimpleNamespace

import optuna
import pytest
import torch

from nas import cost
from nas.metrics import evaluate_with_loss, score
from nas.space import Arch, LayerArch

from .planted import (
    ScoredSupernet,
    every_arch,
    known_best,
    known_front,
    make,
    toy_score,
    toy_space,
)

METRICS = ["acc", "bpb"]  # higher is better, lower is better
# where the architecture weights of DARTS / GDAS point before the final decision: a poor arch
START = Arch(2, (LayerArch("local", 1, 16), LayerArch("full", 1, 16)))


def context(net: ScoredSupernet) -> SimpleNamespace:
    """What `finish` reads of a search."""
    return SimpleNamespace(supernet=net, metric=net.metric, log_metrics=lambda metrics, step: None)


def flops(net: ScoredSupernet):
    return lambda arch: float(cost.arch_cost(arch, net.space, net.shape, net.shape.max_len, "flops"))


def point_weights_at(strategy, arch: Arch) -> None:
    """Architecture logits whose argmax is `arch` (the rest of the choices well behind)."""
    choices = strategy.space.choices_of(arch)
    with torch.no_grad():
        for key, options in strategy.space.decisions().items():
            alpha = strategy.alphas[key.replace(".", "_")]
            alpha.zero_()
            alpha[options.index(choices[key])] = 1.0


def test_the_toy_space_can_tell_the_keys_apart():
    """The test below can fail: the best arch by the metric is neither the cheapest nor the costliest,
    nor the one of the lowest loss, and in each direction it is the other direction's worst."""
    space = toy_space()
    net = ScoredSupernet(space)
    archs, best = every_arch(space), known_best(space, "acc")
    assert best == known_best(space, "bpb") and len(archs) == 20
    assert best not in (min(archs, key=flops(net)), max(archs, key=flops(net)))
    loss = {arch: evaluate_with_loss(net, net.batches(), "acc", arch=arch)[1] for arch in archs}
    assert min(loss, key=loss.get) != best
    assert min(archs, key=lambda a: toy_score(a, "bpb")) == best == max(archs, key=lambda a: toy_score(a, "acc"))
    assert len(known_front(space, "acc", flops(net))) >= 3


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    "name, options",
    [
        ("random", {"samples": 200}),
        ("enas", {"final_samples": 200}),
        ("darts", {"decide": {"rule": "greedy"}}),
        ("darts", {"decide": {"rule": "top2"}}),
        ("darts", {"decide": {"rule": "greedy"}, "partial": 2}),  # PC-DARTS
        ("gdas", {"decide": {"rule": "greedy"}}),
        ("gdas", {"decide": {"rule": "top2"}}),
    ],
    ids=["random", "enas", "darts", "darts-top2", "pc-darts", "gdas", "gdas-top2"],
)
def test_the_final_choice_is_the_known_best_arch(name, options, metric):
    space = toy_space()
    net = ScoredSupernet(space, metric)
    strategy = make(name, space, seed=0, **options)
    if hasattr(strategy, "alphas"):
        point_weights_at(strategy, START)
        assert strategy.current_arch() == START
    result = strategy.finish(context(net), net.batches())
    assert result.best == known_best(space, metric)
    if result.ranked:  # every arch was sampled, and they are listed best first in the metric's direction
        assert {c.arch for c in result.ranked} == set(every_arch(space))
        scores = [score(c.metrics[f"val/{metric}"], metric) for c in result.ranked]
        assert scores == sorted(scores, reverse=True) and result.ranked[0].arch == result.best


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    "name, options",
    [
        ("random", {"samples": 200}),
        ("enas", {"final_samples": 200}),
        ("darts", {"decide": {"rule": "greedy"}}),
        ("gdas", {"decide": {"rule": "top2"}}),
    ],
    ids=["random", "enas", "darts", "gdas-top2"],
)
def test_the_report_carries_a_paired_test_of_each_final_decision(name, options, metric):
    """A pick among whole archs is one decision, the best against the second best; a decide rule's
    are its compared decisions, each kept choice against the best of the others it tried."""
    space = toy_space()
    net = ScoredSupernet(space, metric)
    strategy = make(name, space, seed=0, **options)
    if hasattr(strategy, "alphas"):
        point_weights_at(strategy, START)
    result = strategy.finish(context(net), net.batches())
    evidence = strategy.report().evidence
    key = f"val/{metric}"
    assert evidence and all(s.items == ScoredSupernet.rows for s in evidence)
    assert {s.test for s in evidence} == {"McNemar" if metric == "acc" else "paired t"}
    if result.ranked:
        (pick,) = evidence
        first, second = result.ranked[:2]
        assert pick.decision == "pick of 20"
        assert (pick.winner_value, pick.runner_up_value) == pytest.approx((first.metrics[key], second.metrics[key]))
        assert pick.winner == "layer1.heads=2" and pick.runner_up == "layer1.heads=1"  # all they differ in
        if metric == "acc":  # 0.73 against 0.72: one item of 100 tells them apart
            assert pick.p == 1.0 and not pick.separated
        return
    assert [s.decision for s in evidence] == list(strategy.comparison)
    for s in evidence:
        kept, *others = sorted(strategy.comparison[s.decision]["tried"], key=lambda t: str(t["choice"]) != s.winner)
        assert s.winner == str(kept["choice"]) == str(strategy.comparison[s.decision]["kept"])
        assert s.winner_value == pytest.approx(kept[key])
        best_other = max(others, key=lambda t: score(t[key], metric))
        assert s.runner_up_value == pytest.approx(best_other[key])
    attention = next(s for s in evidence if s.decision == "layer0.attention")
    assert attention.winner == "full" and attention.separated  # 0.73 against 0.53 of 100 items


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("name", ["darts", "gdas", "fixed"])
def test_argmax_and_fixed_keep_their_arch_whatever_the_supernet_scores(name, metric):
    space = toy_space()
    net = ScoredSupernet(space, metric)
    options = {"arch": START} if name == "fixed" else {"decide": {"rule": "argmax"}}
    strategy = make(name, space, seed=0, **options)
    if name != "fixed":
        point_weights_at(strategy, START)
    assert strategy.finish(context(net), net.batches()).best == START != known_best(space, metric)
    assert strategy.report().evidence == ()  # nothing compared on validation items


@pytest.mark.parametrize("metric", METRICS)
def test_evolution_finds_the_known_best_arch_and_pareto_front(metric, monkeypatch):
    space = toy_space()
    net = ScoredSupernet(space, metric)
    told = []  # every (arch, values) evolution tells Optuna
    tell = optuna.Study.tell

    def spy(study, trial, values=None, **kwargs):
        told.append((space.arch_from_choices(trial.params), values))
        return tell(study, trial, values, **kwargs)

    monkeypatch.setattr(optuna.Study, "tell", spy)
    # 120 trials for 20 archs: NSGA-II reached the whole front with each of 16 seeds (16 x 6: 10 of 12)
    strategy = make("evolution", space, seed=0, population=20, generations=6, cost="flops")
    strategy.attach(net)
    result = strategy.finish(context(net), net.batches())
    assert result.best == known_best(space, metric)
    assert {c.arch for c in result.pareto} == known_front(space, metric, flops(net))
    (pick,) = strategy.report().evidence  # the best against the second best, scored again item by item
    assert pick.decision == f"pick of {len(result.ranked)}"
    assert pick.winner_value == pytest.approx(result.ranked[0].metrics[f"val/{metric}"])
    assert pick.runner_up_value == pytest.approx(result.ranked[1].metrics[f"val/{metric}"])
    scores = [score(c.metrics[f"val/{metric}"], metric) for c in result.ranked]
    assert scores == sorted(scores, reverse=True)

    # what Optuna was told: the measured metric and the cost of each trial's arch, nothing else
    assert len(told) == 120
    for arch, values in told:
        measured, _ = evaluate_with_loss(net, net.batches(), metric, arch=arch)
        assert values == [measured, flops(net)(arch)]
        assert values[0] == pytest.approx(toy_score(arch, metric), abs=1e-6)
