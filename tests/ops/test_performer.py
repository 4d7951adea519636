"""Performer (FAVOR++ and ReLU kernels) against the papers' formulas and exact softmax attention."""
import copy
import math

import pytest
import torch
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.ops.attention import make_core
from nas.ops.attention.performer import favor_pp_a, favor_pp_log_features, orthogonal_gaussian


def softmax_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def favor_pp_formula(w, q, k, v, mask):
    """FAVOR++ as the paper writes it, without stabilizers; A is the variance-optimal root."""
    m, d = w.shape
    x, y = q * d ** -0.25, k * d ** -0.25
    real = mask[:, None, :, None].float()
    count = real.sum(2)  # (b, 1, 1)
    mx, my = (x * real).sum(2) / count, (y * real).sum(2) / count
    rho = ((x.square() * real).sum((2, 3)) + (y.square() * real).sum((2, 3))) / count[..., 0] \
        + 2 * (mx * my).sum(-1)
    a = ((2 * d - 4 * rho) - torch.sqrt((4 * rho - 2 * d) ** 2 + 64 * d * rho)) / (32 * d)
    a = a[..., None, None]

    def phi(z):
        return (1 - 4 * a) ** (d / 4) / math.sqrt(m) * torch.exp(
            a * w.square().sum(-1) + torch.sqrt(1 - 4 * a) * (z @ w.T) - z.square().sum(-1, keepdim=True) / 2)

    phi_q, phi_k = phi(x), phi(y) * real  # padded keys have no features
    return (phi_q @ (phi_k.transpose(-1, -2) @ v)) / (phi_q @ phi_k.sum(-2)[..., None])


def test_stabilized_forward_equals_the_formula():
    """The per-feature and per-query stabilizers and the dropped factors cancel exactly."""
    torch.manual_seed(0)
    core = make_core("performer", 16, 2, 64, features=32)
    q, k, v = (torch.randn(2, 2, 40, 16) for _ in range(3))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 10:25] = False
    k[1, :, 10:25] *= 10  # large junk keys must not move the stabilizer
    q[1, :, 10:25] *= 10  # nor junk queries the choice of A
    expected = favor_pp_formula(core.features, q, k, v, mask)
    real = mask[:, None, :, None].expand_as(v)  # the formula overflows on the junk queries
    torch.testing.assert_close(core(q, k, v, mask)[real], expected[real], atol=1e-5, rtol=1e-4)


def test_a_minimises_the_second_moment():
    """favor_pp_a is the minimum over A < 1/8 of the averaged log second moment (checked on a grid)."""
    torch.manual_seed(0)
    d = 16
    x, y = torch.randn(1, 1, 30, d) * 0.6, torch.randn(1, 1, 30, d) * 0.6 + 0.2
    rho = (x[0, 0, :, None] + y[0, 0, None]).square().sum(-1).mean()  # mean over all pairs
    grid = torch.linspace(-1.0, 0.12, 20001, dtype=torch.float64)
    objective = d * torch.log(1 - 4 * grid) - d / 2 * torch.log(1 - 8 * grid) \
        + 2 * rho.double() * (1 - 4 * grid) / (1 - 8 * grid)
    best = grid[objective.argmin()].item()
    assert favor_pp_a(x, y, None).item() == pytest.approx(best, abs=1e-3)
    assert best < -0.01  # far enough from FAVOR+ (A = 0) that the test tells them apart


def test_favor_pp_is_unbiased_on_average_over_draws():
    """The mean of phi(x).phi(y) over many feature draws is exp(x.y); dropping D = (1-4A)^(d/4)
    (a biased variant) would miss by the factor printed below, far outside the tolerance."""
    generator = torch.Generator().manual_seed(0)
    d = 8
    x = torch.randn(1, 1, 4, d, generator=generator) * 0.4  # (1, 1, 4, d)
    y = torch.randn(1, 1, 4, d, generator=generator) * 0.4
    a = torch.full((1, 1), -0.1)  # any A < 1/8 is unbiased; this one is far from 0
    w = orthogonal_gaussian(2**17, d, generator)  # rows are N(0, I) marginally
    estimate = (favor_pp_log_features(x, w, a)[..., :, None, :]
                + favor_pp_log_features(y, w, a)[..., None, :, :]).exp().sum(-1)  # (1, 1, 4, 4)
    exact = (x @ y.transpose(-1, -2)).exp()
    torch.testing.assert_close(estimate, exact, rtol=0.03, atol=0)
    biased_by = (1 - 4 * a) ** (d / 2)  # what a missing D (on both sides) would multiply by
    assert (biased_by - 1).abs().item() > 0.3


def test_relu_kernel_equals_a_direct_computation():
    """Generalized attention of the Performer paper: weights relu(Wq').relu(Wk'), row-normalized."""
    torch.manual_seed(0)
    core = make_core("performer", 16, 2, 64, features=24, kernel="relu")
    q, k, v = (torch.randn(2, 2, 30, 16) for _ in range(3))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, 5:9] = False
    w = core.features
    weights = F.relu(q / 2 @ w.T) @ F.relu(k / 2 @ w.T).transpose(-1, -2)  # d^-1/4 = 1/2 per side
    weights = weights * mask[:, None, None, :]  # (b, h, n, n)
    expected = weights @ v / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(core(q, k, v, mask), expected, atol=1e-5, rtol=1e-4)


def test_error_falls_as_features_grow():
    """FAVOR++ estimates softmax attention with error ~ 1/sqrt(m); averaged over seeds."""
    errors = []
    for m in (64, 256, 1024):
        total = 0.0
        for seed in range(4):
            torch.manual_seed(seed)
            core = make_core("performer", 16, 2, 128, features=m)
            q, k = torch.randn(2, 2, 128, 16) * 0.5, torch.randn(2, 2, 128, 16) * 0.5
            v = torch.randn(2, 2, 128, 16)
            exact = softmax_attention(q, k, v)
            total += ((core(q, k, v) - exact).norm() / exact.norm()).item() / 4
        errors.append(total)
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.12, errors  # measured about 0.25, 0.13, 0.065


def test_features_are_orthogonal_within_a_block():
    torch.manual_seed(0)
    w = make_core("performer", 16, 2, 64, features=40).features  # blocks of 16, 16, 8 rows
    assert w.shape == (40, 16)
    for block in (w[:16], w[16:32], w[32:]):
        unit = F.normalize(block, dim=-1)
        torch.testing.assert_close(unit @ unit.T, torch.eye(len(block)), atol=1e-5, rtol=0)


def test_redraw_changes_features_and_a_seed_reproduces_them():
    torch.manual_seed(0)
    core = make_core("performer", 16, 2, 64, features=32)
    torch.manual_seed(0)
    twin = make_core("performer", 16, 2, 64, features=32)
    torch.testing.assert_close(core.features, twin.features)
    before = core.features.clone()
    core.redraw_features()
    twin.redraw_features()
    assert not torch.allclose(core.features, before)
    torch.testing.assert_close(core.features, twin.features)
    assert {"features", "seed", "draws"} <= set(core.state_dict())  # a checkpoint keeps the draw


def test_training_redraws_every_n_steps_and_a_copy_continues_the_same_way():
    """redraw_every=2: forwards 3 and 5 redraw. The redraw state is buffers, so an extracted
    copy taken mid-way continues with exactly the draws of the original."""
    torch.manual_seed(0)
    core = make_core("performer", 16, 2, 64, features=32, redraw_every=2).train()
    q, k, v = (torch.randn(1, 2, 10, 16) for _ in range(3))
    seen = []
    for step in range(5):
        if step == 2:
            copy_ = core.extract(1)
        core(q, k, v)
        seen.append(core.features.clone())
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(seen[2], seen[3]) and not torch.equal(seen[3], seen[4])
    for step in range(2, 5):
        copy_(q[:, :1], k[:, :1], v[:, :1])
    torch.testing.assert_close(copy_.features, core.features)
    core.eval()(q, k, v)
    torch.testing.assert_close(copy_.features, core.features)  # no redraw outside training


def test_all_padding_rows_are_finite():
    torch.manual_seed(0)
    for kernel in ("softmax", "relu"):
        core = make_core("performer", 16, 2, 64, features=32, kernel=kernel)
        q, k, v = (torch.randn(2, 2, 20, 16, requires_grad=True) for _ in range(3))
        mask = torch.ones(2, 20, dtype=torch.bool)
        mask[1] = False
        out = core(q, k, v, mask)
        out.sum().backward()
        assert torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_unknown_kernel_is_a_config_error():
    with pytest.raises(ConfigError, match="kernel must be one of softmax, relu, got 'tanh'"):
        make_core("performer", 8, 1, 64, kernel="tanh")
