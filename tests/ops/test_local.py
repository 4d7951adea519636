"""Sliding-window attention against full attention and a dense reference."""

import pytest
import torch

from nas.ops.attention import build, make_core


@pytest.mark.parametrize("global_tokens", [0, 3])
def test_window_covering_the_sequence_equals_full(global_tokens):
    """With every key in the window, global tokens change nothing: no key is counted twice."""
    torch.manual_seed(0)
    full = build("full", 32, 4, max_len=64).eval()
    local = build("local", 32, 4, max_len=64, window=128, global_tokens=global_tokens).eval()
    local.load_state_dict(full.state_dict())
    x = torch.randn(2, 50, 32)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 31:] = False
    with torch.no_grad():
        torch.testing.assert_close(local(x, mask), full(x, mask), atol=1e-5, rtol=1e-5)


def dense_reference(q, k, v, mask, window, global_tokens):
    """Full n x n scores with the band and the global rule as a mask."""
    n = q.shape[2]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = ((i - j).abs() <= window // 2) | (i < global_tokens) | (j < global_tokens)  # (n, n)
    allowed = allowed & mask[:, None, None, :]  # (b, 1, n, n)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (b, h, n, n)
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v


@pytest.mark.parametrize("window, global_tokens", [(8, 0), (8, 2), (7, 5)])
def test_equals_dense_reference_with_band_mask(window, global_tokens):
    torch.manual_seed(0)
    core = make_core("local", 8, 2, 64, window=window, global_tokens=global_tokens)
    q, k, v = (torch.randn(2, 2, 37, 8) for _ in range(3))  # 37 is no multiple of the block
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[0, 30:] = False  # padding at the end
    mask[1, 1] = mask[1, 12:15] = False  # a padded global token and a gap in the middle
    got = core(q, k, v, mask)
    want = dense_reference(q, k, v, mask, window, global_tokens)
    real = mask[:, None, :].expand(-1, 2, -1)  # (b, h, n): rows of padded queries are free
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(got).all()


def test_cost_is_linear_in_length():
    core = make_core("local", 16, 2, 4096, window=64, global_tokens=4)
    assert core.flops(2048, 2) == pytest.approx(2 * core.flops(1024, 2))
    assert core.activation_elements(2048, 2) == pytest.approx(2 * core.activation_elements(1024, 2))
