"""Hard constraints (`strategy.constraints`) in every strategy's final pick, on the toy space whose
scores are known (`planted.ScoredSupernet`): the pick is the best arch within the limits, found by
enumerating the space; `exact_layers` counts layers of exact attention; a limit no arch meets is
one line, before training when even the cheapest arch misses it, after the search otherwise."""

import re
from types import SimpleNamespace

import pytest
import torch

from nas import cost
from nas.errors import ConfigError
from nas.model import ModelShape
from nas.space import Arch, LayerArch, SearchSpace
from nas.strategies.constraints import Constraints
from nas.strategies.penalties import CostPenalty, PenaltyConfig
from tests.helpers import load_space

from .planted import ScoredSupernet, every_arch, make, toy_score, toy_space

NO_EXACT = {"exact_layers": 0}  # the toy space's best arch has full attention in layer 0
# where the architecture weights of DARTS / GDAS point: full attention in its second layer
START = Arch(2, (LayerArch("local", 1, 16), LayerArch("full", 1, 16)))
STRATEGIES = [
    ("random", {"samples": 200}),
    ("enas", {"final_samples": 200}),
    ("darts", {"decide": {"rule": "greedy"}}),
    ("darts", {"decide": {"rule": "top2"}}),
    ("gdas", {"decide": {"rule": "greedy"}}),
    ("gdas", {"decide": {"rule": "top2"}}),
    ("evolution", {"population": 20, "generations": 4, "cost": "flops"}),
]
IDS = ["random", "enas", "darts", "darts-top2", "gdas", "gdas-top2", "evolution"]


def context(net: ScoredSupernet) -> SimpleNamespace:
    return SimpleNamespace(supernet=net, metric=net.metric, log_metrics=lambda metrics, step: None)


def exact(arch: Arch) -> int:
    return sum(layer.attention == "full" for layer in arch.layers)


def best_within(space, metric: str, allowed) -> Arch:
    sign = 1 if metric == "acc" else -1
    return max((a for a in every_arch(space) if allowed(a)), key=lambda a: sign * toy_score(a, metric))


def point_weights_at(strategy, arch: Arch, also: dict | None = None) -> None:
    """Architecture logits whose argmax is `arch`; `also` raises {decision: choice} above the rest."""
    choices = strategy.space.choices_of(arch)
    with torch.no_grad():
        for key, options in strategy.space.decisions().items():
            alpha = strategy.alphas[key.replace(".", "_")]
            alpha.zero_()
            alpha[options.index(choices[key])] = 1.0
            if also and key in also:
                alpha[options.index(also[key])] = 0.5


def search(name, options, net, **limits):
    strategy = make(name, net.space, seed=0, constraints=limits, **options)
    strategy.attach(net)
    if hasattr(strategy, "alphas"):
        point_weights_at(strategy, START)
    return strategy, strategy.finish(context(net), net.batches())


def test_exact_layers_counts_full_attention_and_adds_over_layers():
    space = load_space("hybrid_lm")
    shape = ModelShape(256, 256, 256, "tokens", causal=True)
    for seed in range(10):
        arch = space.sample(seed)
        full = sum(space.attention[layer.attention].type == "full" for layer in arch.layers)
        assert cost.arch_cost(arch, space, shape, 256, "exact_layers") == full
    penalty = CostPenalty(PenaltyConfig(cost="exact_layers", weight=1.0), space)
    penalty.attach(shape)
    probs = {key: torch.softmax(torch.randn(len(options)), 0) for key, options in space.decisions().items()}
    p_full = [float(probs[f"layer{i}.attention"][list(space.attention).index("full")]) for i in range(4)]
    depth = dict(zip(space.depths, probs["depth"].tolist()))
    expected = depth[2] * sum(p_full[:2]) + depth[4] * sum(p_full)  # DARTS's expected count
    assert float(penalty.expected(probs)) == pytest.approx(expected)
    assert cost.UNITS["exact_layers"] == "exact-attention layers"


@pytest.mark.parametrize("metric", ["acc", "bpb"])
@pytest.mark.parametrize("name, options", STRATEGIES, ids=IDS)
def test_the_final_pick_is_the_best_arch_within_the_constraints(name, options, metric):
    space = toy_space()
    net = ScoredSupernet(space, metric)
    unconstrained = best_within(space, metric, lambda a: True)
    want = best_within(space, metric, lambda a: exact(a) == 0)
    assert exact(unconstrained) == 1 and want != unconstrained  # the limit binds
    strategy, result = search(name, options, net, **NO_EXACT)
    assert result.best == want
    assert all(exact(c.arch) == 0 for c in result.ranked + result.pareto)


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_argmax_changes_the_layers_ops_before_the_depth(name):
    """From START, dropping layer 1 (depth 1) would meet the limit as well as making it local: a
    budget on the mix swaps ops, even when the weights favour depth 1 more; only when no op change
    can meet the limit does the depth go."""
    space = toy_space()
    net = ScoredSupernet(space)
    strategy = make(name, space, seed=0, constraints=NO_EXACT, decide={"rule": "argmax"})
    strategy.attach(net)
    local = Arch(2, (LayerArch("local", 1, 16),) * 2)
    for favoured in (None, {"depth": 1}):
        point_weights_at(strategy, START, also=favoured)
        assert strategy.finish(context(net), net.batches()).best == local
    only_full = SearchSpace.from_dict(
        {**space.to_dict(), "layer": {**space.to_dict()["layer"], "attention": {"full": {}}}}
    )
    strategy = make(name, only_full, seed=0, constraints={"exact_layers": 1}, decide={"rule": "argmax"})
    strategy.attach(ScoredSupernet(only_full))
    point_weights_at(strategy, Arch(2, (LayerArch("full", 2, 16),) * 2))
    assert strategy.finish(context(ScoredSupernet(only_full)), net.batches()).best == Arch(
        1, (LayerArch("full", 2, 16),)
    )


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_greedy_moves_a_later_decision_to_afford_a_better_earlier_one(name):
    """Full attention pays off in layer 0 (+0.30) far more than in layer 1 (+0.05), a second layer
    helps a little (+0.02), and one layer of full attention is allowed. The weights point at full
    in both, layer 0 the less sure, so the repair starts from (local, full). Settling layer 0 with
    layer 1 as it is would never try full there (two layers of it), and layer 1 keeps full while
    layer 0 is local; tried with layer 1 moved within the limit, (full, local) wins."""
    space = toy_space()
    score = lambda arch, metric: round(
        0.5
        + 0.30 * (arch.layers[0].attention == "full")
        + 0.02 * (arch.depth == 2)
        + 0.05 * (arch.depth == 2 and arch.layers[1].attention == "full"),
        2,
    )
    net = ScoredSupernet(space, score=score)
    strategy = make(name, space, seed=0, constraints={"exact_layers": 1}, decide={"rule": "greedy"})
    strategy.attach(net)
    point_weights_at(strategy, Arch(2, (LayerArch("full", 1, 16),) * 2), also={"layer0.attention": "local"})
    best = strategy.finish(context(net), net.batches()).best
    assert [layer.attention for layer in best.layers] == ["full", "local"]
    # layer 1's full attention was tried with layer 0 moved within the limit: (local, full)
    tried = {t["choice"]: t for t in strategy.comparison["layer1.attention"]["tried"]}
    assert tried["full"]["val/acc"] == 0.57 and "violation" not in tried["full"]


@pytest.mark.parametrize("name", ["darts", "gdas"])
def test_a_candidate_no_move_brings_within_the_limits_says_by_how_much_it_misses_them(name):
    """No exact attention at all: full attention in layer 0 scores best and cannot be kept; its
    record in the comparison (summary.txt's candidates) carries its violation, the kept one none."""
    space = toy_space()
    net = ScoredSupernet(space)
    strategy, result = search(name, {"decide": {"rule": "greedy"}}, net, **NO_EXACT)
    tried = {t["choice"]: t for t in strategy.comparison["layer0.attention"]["tried"]}
    assert tried["full"]["val/acc"] > tried["local"]["val/acc"]
    assert tried["full"]["violation"] == 1 and "violation" not in tried["local"]
    assert result.best.layers[0].attention == "local"


def test_repair_keeps_full_attention_where_the_weights_want_it_most():
    space = load_space("hybrid_lm")
    limits = Constraints({"exact_layers": 1}, space)
    limits.attach(ModelShape(256, 256, 256, "tokens", causal=True))
    decisions = space.decisions()
    probs = {key: torch.full((len(options),), 0.01) for key, options in decisions.items()}
    want_full = [0.5, 0.9, 0.6, 0.7]  # layer 1 wants full attention most; each layer's runner-up is gla
    for i, p in enumerate(want_full):
        probs[f"layer{i}.attention"][list(space.attention).index("full")] = p
        probs[f"layer{i}.attention"][list(space.attention).index("gla")] = 0.3
    probs["depth"][decisions["depth"].index(4)] = 1.0
    argmax = {key: options[int(probs[key].argmax())] for key, options in decisions.items()}
    repaired = limits.repair(argmax, probs)
    assert [repaired[f"layer{i}.attention"] for i in range(4)] == ["gla", "full", "gla", "gla"]
    assert {k: v for k, v in repaired.items() if "attention" not in k} == {
        k: v for k, v in argmax.items() if "attention" not in k
    }


@pytest.mark.parametrize("name, options", STRATEGIES, ids=IDS)
def test_a_limit_the_cheapest_arch_misses_is_one_line_before_training(name, options):
    space = SearchSpace.from_dict({**toy_space().to_dict(), "name": "exact"})
    only_full = SearchSpace.from_dict(
        {**space.to_dict(), "layer": {**space.to_dict()["layer"], "attention": {"full": {}}}}
    )
    strategy = make(name, only_full, seed=0, constraints=NO_EXACT, **options)
    message = "no arch in space 'exact' meets constraints.exact_layers <= 0: the cheapest, 1 x (full, heads=1"
    with pytest.raises(ConfigError, match=re.escape(message) + ".* costs 1 exact-attention layers at seq_len 24$"):
        strategy.attach(ScoredSupernet(only_full))


@pytest.mark.parametrize("name, options", STRATEGIES, ids=IDS)
def test_limits_no_arch_meets_together_are_one_line_after_the_search(name, options):
    """No exact attention forces the synthesizer, whose parameters miss the limit that full attention
    meets: each limit alone is met by its cheapest arch, so only the search can tell."""
    space = SearchSpace.from_dict(
        {
            **toy_space().to_dict(),
            "layer": {"attention": {"full": {}, "synthesizer": {}}, "heads": [1], "ffn_dim": [16]},
        }
    )
    net = ScoredSupernet(space)
    full = cost.arch_cost(Arch(1, (LayerArch("full", 1, 16),)), space, net.shape, 24, "params")
    strategy = make(name, space, seed=0, constraints={"exact_layers": 0, "params": full}, **options)
    strategy.attach(net)
    if hasattr(strategy, "alphas"):
        point_weights_at(strategy, Arch(2, (LayerArch("full", 1, 16),) * 2))
    with pytest.raises(ConfigError, match=r"meets the constraints \(exact_layers <= 0, params <= \d+\); loosen"):
        strategy.finish(context(net), net.batches())


@pytest.mark.parametrize("name", ["random", "enas", "darts", "gdas", "evolution"])
@pytest.mark.parametrize(
    "constraints, message",
    [
        ({"watts": 3}, "strategy.constraints: unknown cost 'watts'; allowed: params"),
        ({"exact_layers": -1}, "strategy.constraints.exact_layers=-1: must be a finite number >= 0"),
        ({"params": 0}, "strategy.constraints.params=0: must be a finite number > 0"),
        ({"exact_layers": float("nan")}, "strategy.constraints.exact_layers=nan: must be a finite number >= 0"),
    ],
)
def test_bad_constraints_are_one_line(name, constraints, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make(name, toy_space(), constraints=constraints)
