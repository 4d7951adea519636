"""The one Pareto front and the one best-first order, on hand-made candidates."""

import pytest

from nas.results import Candidate, best_first, pareto_front
from nas.space import Arch, LayerArch


def arch(ffn: int) -> Arch:
    return Arch(1, (LayerArch("full", 2, ffn),))


def test_front_by_hand():
    # (acc, params): a and d are the front; b is beaten by a (same cost, worse acc), c by d
    # (cheaper and better), e by a on cost alone (same acc)
    a, b, c, d, e = (
        Candidate(arch(i), {"val/acc": acc, "cost/params": params})
        for i, (acc, params) in enumerate([(0.9, 200), (0.8, 200), (0.5, 150), (0.6, 100), (0.9, 300)], 1)
    )
    assert pareto_front([b, c, e, a, d], "val/acc", "cost/params") == [d, a]  # cheapest first


def test_ties_on_both_stay_and_keep_their_order():
    a, b = (Candidate(arch(i), {"val/acc": 0.7, "cost/params": 10}) for i in (1, 2))
    assert pareto_front([b, a], "val/acc", "cost/params") == [b, a]


@pytest.mark.parametrize("higher, expected", [(True, "cd"), (False, "ab")])
def test_direction(higher, expected):
    # higher: c beats a at the same cost, d beats b; lower (bits per byte): the reverse
    named = {
        name: Candidate(arch(i), {"val/m": m, "cost/params": p})
        for i, (name, m, p) in enumerate([("a", 1.0, 10), ("b", 0.5, 20), ("c", 2.0, 10), ("d", 3.0, 20)], 1)
    }
    front = pareto_front(list(named.values()), "val/m", "cost/params", higher_is_better=higher)
    by_arch = {c.arch: n for n, c in named.items()}
    assert "".join(by_arch[c.arch] for c in front) == expected


def test_empty():
    assert pareto_front([], "val/acc", "cost/params") == []


@pytest.mark.parametrize("metric, values", [("acc", (0.9, 0.8)), ("bpb", (1.0, 2.0))])
def test_best_first_breaks_ties_by_loss_then_cost(metric, values):
    good, bad = values  # bits per byte: lower is better
    named = {
        "worse": (bad, 0.1, 1),
        "tie_high_loss": (good, 0.5, 1),
        "tie_low_loss_costly": (good, 0.2, 9),
        "tie_low_loss_cheap": (good, 0.2, 3),
        "no_loss": (good, None, 1),
    }
    candidates = [
        Candidate(arch(i), {f"val/{metric}": m, "cost/params": p, **({} if l is None else {"val/loss": l})})
        for i, (m, l, p) in enumerate(named.values(), 1)
    ]
    order = [list(named)[c.arch.layers[0].ffn_dim - 1] for c in best_first(candidates[::-1], metric)]
    assert order == ["tie_low_loss_cheap", "tie_low_loss_costly", "tie_high_loss", "no_loss", "worse"]
