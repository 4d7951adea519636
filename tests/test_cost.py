"""The cost model against counts taken from real modules."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas import cost
from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec, Subnet
from nas.ops.attention import ATTENTION, make_core
from nas.space import Arch, LayerArch, SearchSpace
from tests.helpers import SPACES

SHAPE = ModelShape(vocab_size=30, num_classes=4, max_len=256)


@pytest.fixture(scope="module")
def lra():
    return SearchSpace.from_yaml(SPACES / "lra.yaml")


def test_params_equal_the_subnet_parameter_count(lra):
    for seed in range(10):
        arch = lra.sample(seed)
        model = Subnet(ModelSpec(arch, lra, SHAPE))
        assert cost.params(ModelSpec(arch, lra, SHAPE)) == sum(p.numel() for p in model.parameters())


def count_flops(fn) -> int:
    # The counter skips PyTorch's fused CPU attention kernels: count on the plain math path.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_flops_match_pytorchs_flop_counter(lra):
    """Matrix products dominate; the analytic count is within 25% of what torch counts."""
    for seed in range(5):
        arch = lra.sample(seed)
        model = Subnet(ModelSpec(arch, lra, SHAPE)).eval()
        tokens = torch.randint(1, SHAPE.vocab_size, (2, 256))
        with torch.no_grad():
            counted = count_flops(lambda: model(tokens))
        analytic = cost.flops(ModelSpec(arch, lra, SHAPE), seq_len=256, batch_size=2)
        assert 0.75 * counted <= analytic <= 1.25 * counted, (arch.describe(), analytic, counted)


@pytest.mark.parametrize("name", ATTENTION.names())
def test_each_core_flops_scale_as_the_op_should(name):
    """Full attention is quadratic in n; every other op is at most quadratic, efficient ones linear."""
    core = make_core(name, head_dim=16, max_heads=2, max_len=8192)
    ratio = core.flops(8192, 2) / core.flops(2048, 2)
    if name in ("full", "synthesizer"):
        assert ratio == pytest.approx(16, rel=0.01)
    else:
        assert ratio <= 4.5


def test_estimate_scales_with_length_and_batch(lra):
    arch = lra.largest()
    short = cost.estimate(ModelSpec(arch, lra, SHAPE), seq_len=64)
    long = cost.estimate(ModelSpec(arch, lra, SHAPE), seq_len=256, batch_size=2)
    assert short.params == long.params
    assert long.flops > 8 * short.flops and long.activation_mib > 8 * short.activation_mib


def test_latency_is_the_median_of_the_timed_forwards_in_ms(monkeypatch):
    # a fake clock: two warm-up calls (not counted), then forwards of 3, 1 and 10 ms
    ticks = iter([0.0, 0.5, 1.0, 1.5, 2.0, 2.003, 3.0, 3.001, 4.0, 4.010])
    monkeypatch.setattr(cost.time, "perf_counter", lambda: next(ticks))
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            calls.append(self.training)
            return x

    model = Recorder().train()
    assert cost.measure_latency_ms(model, (torch.zeros(1),), repeats=3, warmup=2) == pytest.approx(3.0)
    assert calls == [False] * 5  # every forward in eval mode ...
    assert model.training  # ... and the mode given back


def test_subnet_latency_runs_the_model_on_real_token_ids(lra, monkeypatch):
    seen = []
    monkeypatch.setattr(cost, "measure_latency_ms", lambda model, inputs, **kw: seen.append(inputs) or 1.0)
    model = Subnet(ModelSpec(lra.smallest(), lra, SHAPE))
    assert cost.subnet_latency_ms(model, 64, SHAPE.vocab_size, batch_size=2) == 1.0
    ((tokens,),) = seen
    assert tokens.shape == (2, 64) and 1 <= int(tokens.min()) and int(tokens.max()) < SHAPE.vocab_size


@pytest.mark.parametrize("reversible", [False, True])
@pytest.mark.parametrize("ffn_chunks", [1, 4])
def test_activation_memory_follows_the_memory_options(reversible, ffn_chunks):
    """Within a factor 2.5 of the measured training peak less the gradients (an estimate: the
    ops' own counts are generous); reversible: flat in depth, as measured."""
    from nas.peak_memory import PeakMemory

    n, estimates, measured = 256, [], []
    for depth in (2, 6):
        space = SearchSpace.from_dict(
            {
                "name": "m",
                "dim": 32,
                "head_dim": 8,
                "depth": [depth],
                "layer": {"attention": {"local": {"window": 32}}, "heads": [4], "ffn_dim": [256]},
                "memory": {"reversible": reversible, "ffn_chunks": ffn_chunks},
            }
        )
        shape = ModelShape(20, 5, n)
        torch.manual_seed(0)
        model = Subnet(ModelSpec(space.largest(), space, shape)).train()
        with PeakMemory() as memory:
            model(torch.randint(1, 20, (1, n))).sum().backward()
        measured.append((memory.peak - sum(p.numel() * 4 for p in model.parameters())) / 2**20)
        estimates.append(cost.estimate(ModelSpec(space.largest(), space, shape), n).activation_mib)
    for est, got in zip(estimates, measured):
        assert got / 2.5 < est < got * 2.5
    if reversible:
        assert estimates[0] == estimates[1] and measured[0] == measured[1]
    else:
        assert estimates[1] > 1.8 * estimates[0] and measured[1] > 1.8 * measured[0]


CAUSAL = ModelShape(vocab_size=30, num_classes=30, max_len=64, readout="tokens", causal=True)
# every causal op, small enough that a context of 64 spans several windows, buckets and blocks
CAUSAL_SPACE = {
    "name": "causal",
    "dim": 32,
    "head_dim": 8,
    "depth": [1, 2],
    "layer": {
        "attention": {
            "full": {},
            "local": {"window": 16, "global_tokens": 2},
            "performer": {"features": 16},
            "lsh": {"bucket_size": 8, "n_hashes": 2},
            "block_recurrent": {"window": 16, "states": 4},
            "synthesizer": {"variant": "dense"},
            "factorized": {"type": "synthesizer", "variant": "random", "rank": 4},
        },
        "heads": [2, 4],
        "ffn_dim": [32, 64],
    },
}


@pytest.mark.parametrize("n", [5, 64])
def test_state_mib_is_the_size_of_the_decoding_state(n):
    space = SearchSpace.from_dict(CAUSAL_SPACE)
    for seed in range(8):
        arch = space.sample(seed)
        model = Subnet(ModelSpec(arch, space, CAUSAL))
        held = sum(x.numel() * x.element_size() for layer in model.init_state(1, n) for x in layer)
        assert cost.arch_cost(arch, space, CAUSAL, n, "state_mib") * 2**20 == held


@pytest.mark.parametrize("candidate", [c for c in CAUSAL_SPACE["layer"]["attention"] if c != "block_recurrent"])
def test_decode_flops_match_pytorchs_flop_counter(candidate):
    """One step at a context of n tokens, counted on a state of n: within 10%. (Block-recurrent's
    step computes the state update at every token and keeps it at a block's end, which the cost
    model counts once per block.)"""
    space = SearchSpace.from_dict(CAUSAL_SPACE)
    arch = Arch(2, (LayerArch(candidate, 4, 64), LayerArch(candidate, 2, 32)))
    model = Subnet(ModelSpec(arch, space, CAUSAL)).eval()
    n = 64
    state = model.init_state(1, n)
    with torch.no_grad():
        counted = count_flops(lambda: model.step(torch.tensor([3]), state, torch.tensor(n - 1)))
    analytic = cost.estimate(ModelSpec(arch, space, CAUSAL), n).decode_flops
    assert analytic == pytest.approx(counted, rel=0.1)


@pytest.mark.parametrize(
    "name, options",
    [
        ("local", {"window": 32, "global_tokens": 3}),
        ("lsh", {"bucket_size": 16, "n_hashes": 2}),
        ("performer", {"features": 32}),
        ("performer", {"features": 32, "shrink": False}),
        ("synthesizer", {"variant": "random", "rank": None}),
    ],
)
def test_causal_core_flops_match_pytorchs_flop_counter(name, options):
    n = 300  # past performer's chunks of 128, and no multiple of them
    core = make_core(name, 16, 2, 512, causal=True, **options)
    q, k, v = (torch.randn(1, 2, n, 16) if x in core.inputs else None for x in "qkv")
    with torch.no_grad():
        assert core.flops(n, 2) == pytest.approx(count_flops(lambda: core(q, k, v)), rel=0.05)


def test_causal_full_attention_counts_the_triangle():
    """SDPA's is_causal skips the blocks above the diagonal, which torch's counter does not know."""
    n = 300
    full, causal = make_core("full", 16, 2, 512), make_core("full", 16, 2, 512, causal=True)
    assert causal.flops(n, 2) == full.flops(n, 2) * (n + 1) // (2 * n)


def test_decode_costs_are_search_objectives_and_constraints():
    """The penalty's expected cost (DARTS/GDAS) and evolution's objective and constraints take them."""
    from nas.strategies.penalties import CostPenalty, PenaltyConfig, check_kind

    space = SearchSpace.from_dict(CAUSAL_SPACE)
    for kind in ("state_mib", "decode_flops"):
        check_kind(kind, "constraints")
        penalty = CostPenalty(PenaltyConfig(cost=kind, weight=1.0), space, seq_len=48)
        penalty.attach(CAUSAL)
        arch = Arch(2, (LayerArch("lsh", 4, 32), LayerArch("performer", 2, 64)))  # every decision made
        probs = {
            key: torch.tensor([float(choice == space.choices_of(arch)[key]) for choice in choices])
            for key, choices in space.decisions().items()
        }
        assert float(penalty.expected(probs)) == pytest.approx(cost.arch_cost(arch, space, CAUSAL, 48, kind))
        choices, cheapest = penalty.cheapest(kind)
        assert cheapest <= min(penalty.of(space.sample(seed), kind) for seed in range(10))


def test_state_of_a_kv_cache_grows_with_the_context_and_a_window_does_not():
    space = SearchSpace.from_dict(CAUSAL_SPACE)
    shape = ModelShape(30, 30, 8192, "tokens", causal=True)
    for candidate, grows in (("full", True), ("local", False), ("performer", False), ("block_recurrent", False)):
        arch = Arch(1, (LayerArch(candidate, 4, 32),))
        short, long = (cost.arch_cost(arch, space, shape, n, "state_mib") for n in (2048, 8192))
        assert long == pytest.approx(4 * short) if grows else long == short
    full = Arch(1, (LayerArch("full", 4, 32),))
    assert cost.arch_cost(full, space, shape, 8192, "state_mib") == 2 * 4 * 8 * 8192 * 4 / 2**20  # K and V, fp32


def test_decode_costs_need_a_causal_model_and_name_the_reason():
    space = SearchSpace.from_dict(CAUSAL_SPACE)
    bidirectional = ModelShape(30, 30, 64, "tokens")
    for kind in ("state_mib", "decode_flops"):
        with pytest.raises(ConfigError, match=f"^cost '{kind}' is a decoding cost, for causal models of token ids;"):
            cost.arch_cost(space.smallest(), space, bidirectional, 64, kind)
    assert cost.estimate(ModelSpec(space.smallest(), space, bidirectional), 64).state_mib is None
    assert set(cost.UNITS) == set(cost.KINDS)
