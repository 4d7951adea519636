"""Linformer against full attention."""
import torch

from nas.ops.attention import build


def test_identity_projections_equal_full():
    """With E = F = I and k = n, projecting keys and values changes nothing."""
    torch.manual_seed(0)
    n = 48
    full = build("full", 32, 4, max_len=n).eval()
    linformer = build("linformer", 32, 4, max_len=n, k=n).eval()
    linformer.load_state_dict(full.state_dict(), strict=False)
    with torch.no_grad():
        linformer.core.e.copy_(torch.eye(n))
        linformer.core.f.copy_(torch.eye(n))
        x = torch.randn(2, n, 32)
        torch.testing.assert_close(linformer(x), full(x), atol=1e-5, rtol=1e-5)


def test_short_sequences_use_the_leading_columns_of_e_and_f():
    """A sequence shorter than max_len equals a layer built for its length with E, F cut to it."""
    torch.manual_seed(0)
    long = build("linformer", 32, 4, max_len=64, k=8).eval()
    short = build("linformer", 32, 4, max_len=20, k=8).eval()
    state = long.state_dict()
    state["core.e"], state["core.f"] = state["core.e"][:, :20], state["core.f"][:, :20]
    short.load_state_dict(state)
    x = torch.randn(2, 20, 32)
    with torch.no_grad():
        torch.testing.assert_close(short(x), long(x), atol=1e-6, rtol=1e-6)


def test_cost_is_linear_in_length():
    core = build("linformer", 32, 4, max_len=4096, k=16).core
    assert core.flops(2048, 4) == 2 * core.flops(1024, 4)
    assert core.flops(1024, 4) < build("full", 32, 4, max_len=4096).core.flops(1024, 4) / 10
