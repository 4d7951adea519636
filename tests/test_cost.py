"""The cost model against counts taken from real modules."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas import cost
from nas.model import ModelShape, ModelSpec, Subnet
from nas.ops.attention import ATTENTION, make_core
from nas.space import SearchSpace
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
