"""Linformer against full attention, against the paper's order of operations, and its cost."""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas.cost import attention_flops
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


def test_mixing_tokens_first_equals_the_papers_order():
    """The layer mixes tokens before projecting them: (E X) W + b. Written the paper's way
    instead, project every token, zero the padding, then mix: E (X W) + b."""
    torch.manual_seed(0)
    b, n, dim, heads, k = 2, 24, 32, 4, 8
    layer = build("linformer", dim, heads, max_len=40, k=k).eval()
    x = torch.randn(b, n, dim)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 17:] = False
    split = lambda t: t.view(b, -1, heads, dim // heads).transpose(1, 2)  # (b, h, rows, d)
    with torch.no_grad():
        e, f = layer.core.e[:, :n], layer.core.f[:, :n]
        keep = mask[:, :, None].float()
        q = split(layer.proj["q"](x))
        keys = split(e @ (x @ layer.proj["k"].weight.T * keep) + layer.proj["k"].bias)
        values = split(f @ (x @ layer.proj["v"].weight.T * keep) + layer.proj["v"].bias)
        attn = torch.softmax(q @ keys.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
        expected = layer.out((attn @ values).transpose(1, 2).reshape(b, n, dim))
        torch.testing.assert_close(layer(x, mask), expected, atol=1e-5, rtol=1e-5)


def test_cost_model_counts_what_torch_counts():
    """Mixes, projections and core, FLOP for FLOP, against PyTorch's counter (math SDPA path)."""
    layer = build("linformer", 64, 4, max_len=512, k=32)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(torch.randn(1, 300, 64))
    assert attention_flops(layer.core, 300, 64, 4) == counter.get_total_flops()
