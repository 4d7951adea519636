"""Properties every registered attention op must have (parametrized over the registry)."""

import pytest
import torch

from nas.errors import ConfigError
from nas.ops.attention import ATTENTION, build

DIM, HEADS, MAX_LEN = 32, 4, 64
# Small block sizes so that the test lengths span several blocks; ops not listed use defaults.
SMALL_OPTIONS = {
    "local": {"window": 8, "global_tokens": 2},
    "block_recurrent": {"window": 8, "states": 4},
    "linformer": {"k": 8},
    "performer": {"features": 16},
    "lsh": {"bucket_size": 4, "n_hashes": 2},
    "synthesizer": {"variant": "dense"},
    "gla": {"chunk": 8, "sub_chunk": 4},
    "gated_deltanet": {"chunk": 8},
    "mamba2": {"chunk": 8},
}


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build(name, DIM, HEADS, MAX_LEN, **SMALL_OPTIONS.get(name, {}))


@pytest.fixture(params=ATTENTION.names())
def name(request):
    return request.param


@pytest.mark.parametrize("n", [1, 7, 37, MAX_LEN])  # 7 and 37 divide no block size
def test_shape(name, n):
    out = make(name)(torch.randn(2, n, DIM))
    assert out.shape == (2, n, DIM)
    assert torch.isfinite(out).all()


def test_gradients_reach_every_parameter(name):
    layer = make(name)
    layer(torch.randn(2, 21, DIM)).square().sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"


def test_padding_does_not_change_real_outputs(name):
    layer = make(name).eval()
    real = torch.randn(2, 19, DIM)
    padded = torch.cat([real, torch.randn(2, 13, DIM) * 5], dim=1)  # 13 junk positions
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, :19] = True
    with torch.no_grad():
        alone = layer(real)
        with_padding = layer(padded, mask)[:, :19]
    torch.testing.assert_close(with_padding, alone, atol=1e-5, rtol=1e-5)


def test_mask_hides_junk_in_the_middle(name):
    """Padding need not sit at the end: junk between real tokens is invisible too."""
    layer = make(name).eval()
    x = torch.randn(1, 24, DIM)
    mask = torch.ones(1, 24, dtype=torch.bool)
    mask[:, 10:14] = False
    other = x.clone()
    other[:, 10:14] = torch.randn(1, 4, DIM) * 5
    with torch.no_grad():
        a, b = layer(x, mask), layer(other, mask)
    torch.testing.assert_close(a[:, mask[0]], b[:, mask[0]], atol=1e-5, rtol=1e-5)


def test_deterministic_given_seed(name):
    x = torch.randn(2, 30, DIM)
    with torch.no_grad():
        torch.testing.assert_close(make(name, seed=3)(x), make(name, seed=3)(x))


def test_too_long_sequence_is_a_clear_error(name):
    with pytest.raises(ConfigError, match=f"sequence length {MAX_LEN + 1} exceeds the model's max_len {MAX_LEN}"):
        make(name)(torch.randn(1, MAX_LEN + 1, DIM))


def test_unknown_option_names_the_allowed_ones(name):
    with pytest.raises(ConfigError, match=f"unknown option 'bogus' for attention '{name}'; allowed:"):
        build(name, DIM, HEADS, MAX_LEN, bogus=1)


def test_unknown_op_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown attention 'nope'; known: .*full"):
        build("nope", DIM, HEADS, MAX_LEN)


def test_extract_keeps_leading_heads(name):
    """A core extracted for fewer heads gives the same outputs as the big one's leading heads."""
    layer = make(name).eval()
    core = layer.core
    small = core.extract(2)
    q, k, v = (torch.randn(2, 2, 20, DIM // HEADS) for _ in range(3))
    pad = lambda t: torch.cat([t, torch.randn(2, HEADS - 2, 20, DIM // HEADS)], dim=1)
    args = [t if i in core.inputs else None for t, i in zip((q, k, v), ("q", "k", "v"))]
    big_args = [None if t is None else pad(t) for t in args]
    with torch.no_grad():
        torch.testing.assert_close(small(*args)[:, :2], core(*big_args)[:, :2], atol=1e-5, rtol=1e-5)
    assert small.num_params(2) == sum(p.numel() for p in small.parameters())


def test_revisions_list_the_ops_past_their_first_and_name_changes():
    from nas.ops.attention import revision_changes, revisions

    assert revisions(["full", "linformer", "linformer"]) == {"linformer": 2}
    assert revisions(["full", "lsh"]) == {}
    assert revision_changes({"linformer": 2}, ["full", "linformer"]) == []
    # a record from before linformer's revision 2 (none), and one from a newer version
    assert revision_changes(None, ["full", "linformer"]) == ["linformer revision 1 -> 2"]
    assert revision_changes({"full": 3}, ["full"]) == ["full revision 3 -> 1"]
