"""The causal form of every op that has one: the future never reaches the past, each op equals an
independent reference (SDPA's is_causal, dense masks, a loop over prefix sums, a loop over LSH
buckets), the step form equals the parallel form token by token, and the step state has the size
the op declares. Linformer has no causal form and refuses in one line."""

import math

import pytest
import torch
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.ops.attention import ATTENTION, build, make_core
from nas.ops.attention import performer as performer_module
from nas.ops.attention.lsh import RowWindows

D, H, MAX_LEN, N = 8, 2, 64, 37  # head dim, heads, longest sequence, test length (no multiple of any block)
# Small blocks, chunks and buckets, so that N spans several; every variant with its own step.
OPTIONS = {
    "full": [{}],
    "local": [{"window": 8}, {"window": 8, "global_tokens": 3}, {"window": 7, "global_tokens": 5}],
    "performer": [{"features": 16}, {"features": 16, "shrink": False}, {"features": 16, "kernel": "relu"}],
    "lsh": [
        {"bucket_size": 4, "n_hashes": 2},
        {"bucket_size": 4, "n_buckets": 1},
        {"bucket_size": 3, "n_hashes": 3, "n_buckets": 4},
    ],
    "block_recurrent": [{"window": 8, "states": 4}, {"window": 6, "states": 3, "gate": "lstm", "update": "skip"}],
    "synthesizer": [{"variant": "dense"}, {"variant": "random", "rank": None}, {"variant": "random", "rank": 4}],
    "gla": [
        {"chunk": 8, "sub_chunk": 4},
        {"decay": "fixed", "chunk": 8},
        {"chunk": 8, "sub_chunk": 4, "short_conv": 4},
    ],
    "gated_deltanet": [{"chunk": 8}, {"chunk": 8, "short_conv": 0}, {"chunk": 8, "short_conv": 2}],
    "mamba2": [{"chunk": 8}, {"chunk": 16, "conv_width": 2}],
    "hyena": [{}, {"order": 8, "inner_layers": 1, "conv_width": 2}],
}
REFUSED = ("linformer",)
CASES = [
    pytest.param(name, options, id=f"{name}-{i}") for name, all in OPTIONS.items() for i, options in enumerate(all)
]


@pytest.fixture(autouse=True)
def small_performer_chunks(monkeypatch):
    """Chunks of 8 positions, so that N = 37 has a short last chunk and prefix sums across four."""
    monkeypatch.setattr(performer_module, "CAUSAL_CHUNK", 8)


def causal_core(name, options, seed=0, heads=H):
    torch.manual_seed(seed)
    return make_core(name, D, heads, MAX_LEN, causal=True, **options)


def qkv(core, b=2, n=N, seed=1, heads=H):
    """Random per-head inputs, None for those the core does not read."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, heads, n, D, generator=g) if x in core.inputs else None for x in ("q", "k", "v")]


def test_every_op_has_a_causal_form_or_refuses():
    """A new op must join OPTIONS (and so every test here) or say why it has no causal form."""
    assert set(ATTENTION.names()) == set(OPTIONS) | set(REFUSED)
    for name in OPTIONS:
        assert not ATTENTION.get(name).causal_refusal
        assert make_core(name, D, H, MAX_LEN, causal=True).causal


def test_linformer_refuses_in_one_line_that_says_why():
    with pytest.raises(ConfigError, match="^attention 'linformer' has no causal form: its E and F mix all n positions"):
        make_core("linformer", D, H, MAX_LEN, causal=True, k=8)
    assert make_core("linformer", D, H, MAX_LEN, k=8)  # bidirectional, as ever


def test_only_a_causal_core_steps():
    core = make_core("full", D, H, MAX_LEN)
    with pytest.raises(ConfigError, match="attention 'full' steps only in its causal form"):
        core.init_state(1, H, 8)


@pytest.mark.parametrize("name, options", CASES)
@pytest.mark.parametrize("padded", [False, True])
def test_future_tokens_leave_the_past_alone(name, options, padded):
    """Changing the tokens after position t changes no output up to t (a whole layer: projections
    and core), with and without padding at the end."""
    torch.manual_seed(0)
    layer = build(name, H * D, H, MAX_LEN, causal=True, **options).eval()
    x = torch.randn(2, N, H * D)
    mask = None
    if padded:
        mask = torch.ones(2, N, dtype=torch.bool)
        mask[1, N - 6 :] = False
    with torch.no_grad():
        base = layer(x, mask)
        for t in (0, 5, 20, N - 2):
            other = x.clone()
            other[:, t + 1 :] = torch.randn(2, N - t - 1, H * D) * 3
            changed = layer(other, mask)
            torch.testing.assert_close(changed[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=1e-6)
            assert not torch.allclose(changed[:, t + 1 :], base[:, t + 1 :], atol=1e-3)  # the future did change


@pytest.mark.parametrize("name, options", CASES)
@pytest.mark.parametrize("length", [N, MAX_LEN])  # a state just long enough, and one of max_len
def test_step_equals_the_parallel_form(name, options, length):
    core = causal_core(name, options).eval()
    q, k, v = qkv(core)
    state = core.init_state(2, H, length)
    shapes = [(x.shape, x.dtype) for x in state]
    steps = []
    with torch.no_grad():
        parallel = core(q, k, v)
        for t in range(N):
            at = [None if x is None else x[:, :, t : t + 1] for x in (q, k, v)]
            out, state = core.step(*at, state, torch.tensor(t))
            assert [(x.shape, x.dtype) for x in state] == shapes  # a fixed-shape state
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=2), parallel, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, options", CASES)
def test_step_state_has_the_declared_size(name, options):
    core = causal_core(name, options, heads=4)
    for heads in (1, 4):
        for n in (1, 5, N, MAX_LEN):
            state = core.init_state(1, heads, n)
            assert sum(x.numel() for x in state) == core.state_elements(n, heads), (heads, n)
            assert all(x.element_size() == 4 for x in state)  # the cost model's bytes per element
            assert all(x.shape[0] == 1 for x in state)  # batch first


@pytest.mark.parametrize("name, options", CASES)
def test_step_cost_grows_as_the_state_does(name, options):
    """A KV cache (or Hyena's cache of inputs) grows with the context; a window, prefix sums or a
    recurrent state do not."""
    core = causal_core(name, options)
    bounded = name in ("local", "performer", "block_recurrent", "gla", "gated_deltanet", "mamba2")
    for measure in (core.state_elements, core.step_flops):
        short, long = measure(MAX_LEN // 2, H), measure(MAX_LEN, H)
        assert short == long if bounded else long > 1.7 * short  # 2x, but for a short convolution's window


@pytest.mark.parametrize("name, options", CASES)
def test_gradients_reach_every_input_and_parameter(name, options):
    core = causal_core(name, options).train()
    inputs = [None if x is None else x.requires_grad_() for x in qkv(core)]
    core(*inputs).square().sum().backward()
    named = [*core.named_parameters(), *((n, x) for n, x in zip("qkv", inputs) if x is not None)]
    for pname, p in named:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"


def reference_attention(q, k, v, allowed, scale=None):
    """softmax(q k^T * scale) v with a (.., n, n) bool mask of the keys each query sees."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return ((q @ k.transpose(-1, -2)) * scale).masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def causal_mask(n, mask=None):
    allowed = torch.ones(n, n, dtype=torch.bool).tril()  # (n, n): j <= i
    return allowed if mask is None else allowed & mask[:, None, None, :]  # (b, 1, n, n)


def real_rows(mask, heads=H):
    return mask[:, None, :].expand(-1, heads, -1)  # (b, h, n): padded queries' rows are free


def padding():
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[0, N - 5 :] = False  # padding at the end
    mask[1, 2] = mask[1, 15:19] = False  # and gaps
    return mask


def test_full_equals_sdpa_is_causal():
    core = causal_core("full", {})
    q, k, v = qkv(core)
    torch.testing.assert_close(core(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True))
    mask = padding()
    want = reference_attention(q, k, v, causal_mask(N, mask))
    torch.testing.assert_close(core(q, k, v, mask)[real_rows(mask)], want[real_rows(mask)], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("global_tokens", [0, 3])
def test_local_window_covering_the_sequence_equals_causal_full(global_tokens):
    torch.manual_seed(0)
    full = build("full", 32, 4, max_len=64, causal=True).eval()
    local = build("local", 32, 4, max_len=64, causal=True, window=128, global_tokens=global_tokens).eval()
    local.load_state_dict(full.state_dict())
    x = torch.randn(2, 50, 32)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 31:] = False
    with torch.no_grad():
        torch.testing.assert_close(local(x, mask)[mask], full(x, mask)[mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(local(x), full(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", OPTIONS["local"])
def test_local_equals_the_left_band(options):
    """Keys i - window // 2 .. i, and the global tokens up to i: a dense mask."""
    core = causal_core("local", options)
    q, k, v = qkv(core)
    mask = padding()
    i, j = torch.arange(N)[:, None], torch.arange(N)[None, :]
    g = options.get("global_tokens", 0)
    allowed = (j <= i) & ((i - j <= options["window"] // 2) | (j < g)) & mask[:, None, None, :]
    want = reference_attention(q, k, v, allowed)
    torch.testing.assert_close(core(q, k, v, mask)[real_rows(mask)], want[real_rows(mask)], atol=1e-6, rtol=1e-5)


def favor_plus_features(core, x):
    """The Performer paper's positive random features (A = 0): exp(w.x' - |x'|^2 / 2) / sqrt(m),
    x' = x / d^(1/4); the ReLU kernel's relu(w.x')."""
    w = core.features
    m, d = w.shape
    x = x * d**-0.25
    if core.config.kernel == "relu":
        return torch.relu(x @ w.T)
    return torch.exp(x @ w.T - x.square().sum(-1, keepdim=True) / 2) / math.sqrt(m)


def prefix_sum_loop(phi_q, phi_k, v):
    """out_i = phi(q_i).S_i / phi(q_i).z_i with S_i = sum_{j<=i} phi(k_j) v_j^T and z_i = sum phi(k_j),
    one position at a time; a query with no key weight gets 0."""
    b, h, n, m = phi_q.shape
    sums, norms, out = torch.zeros(b, h, m, v.shape[-1]), torch.zeros(b, h, m), []
    for i in range(n):
        sums = sums + phi_k[:, :, i, :, None] * v[:, :, i, None, :]
        norms = norms + phi_k[:, :, i]
        num = (phi_q[:, :, i, :, None] * sums).sum(-2)  # (b, h, d)
        den = (phi_q[:, :, i] * norms).sum(-1, keepdim=True)  # (b, h, 1)
        out.append(num / den.masked_fill(den == 0, 1.0))
    return torch.stack(out, 2)  # (b, h, n, d)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
@pytest.mark.parametrize("chunk", [8, 128])  # chunks across the sequence, and one chunk for all of it
def test_performer_equals_a_loop_over_prefix_sums(kernel, chunk, monkeypatch):
    monkeypatch.setattr(performer_module, "CAUSAL_CHUNK", chunk)
    core = causal_core("performer", {"features": 16, "kernel": kernel, "shrink": False})
    q, k, v = qkv(core)
    mask = padding()
    phi_k = favor_plus_features(core, k) * mask[:, None, :, None]  # padded keys have no features
    want = prefix_sum_loop(favor_plus_features(core, q), phi_k, v)
    torch.testing.assert_close(core(q, k, v, mask)[real_rows(mask)], want[real_rows(mask)], atol=1e-5, rtol=1e-4)


def test_performer_shrink_equals_a_loop_over_prefix_means():
    """Query i shrinks towards the mean u_i of the values so far by S_i / (S_i + E_i), the signal and
    noise of the two feature halves summed over the queries so far, each against its own mean."""
    core = causal_core("performer", {"features": 16})
    q, k, v = qkv(core)
    phi_q, phi_k = favor_plus_features(core, q), favor_plus_features(core, k)
    o = prefix_sum_loop(phi_q, phi_k, v)
    o1 = prefix_sum_loop(phi_q[..., :8], phi_k[..., :8], v)
    o2 = prefix_sum_loop(phi_q[..., 8:], phi_k[..., 8:], v)
    out, signal, noise = [], 0, 0
    for i in range(N):
        u = v[:, :, : i + 1].mean(2)  # (b, h, d)
        signal = signal + ((o1[:, :, i] - u) * (o2[:, :, i] - u)).sum(-1)  # (b, h)
        noise = noise + (o1[:, :, i] - o2[:, :, i]).square().sum(-1) / 4
        beta = signal.clamp_min(0) / (signal.clamp_min(0) + noise)
        out.append(u + beta[..., None] * (o[:, :, i] - u))
    torch.testing.assert_close(core(q, k, v), torch.stack(out, 2), atol=1e-5, rtol=1e-4)


def lsh_reference(core, q, v, mask):
    """Reformer's causal LSH one query at a time: in each round the keys of the query's bucket at
    or before it, the bucket_size latest of them (and itself only when alone); rounds combined by
    their softmax normalizers."""
    b, h, n, d = q.shape
    s = core.config.bucket_size
    buckets = core.hash(q)  # (b, h, r, n)
    keys = q / q.norm(dim=-1, keepdim=True) * d**-0.5
    scores = q @ keys.transpose(-1, -2)  # (b, h, n, n)
    out = torch.zeros_like(q)
    for bi, hi, i in ((bi, hi, i) for bi in range(b) for hi in range(h) for i in range(n)):
        parts = []
        for r in range(buckets.shape[2]):
            same = (buckets[bi, hi, r] == buckets[bi, hi, r, i]) & (torch.arange(n) <= i) & mask[bi]
            later = same.sum() - same.long().cumsum(0)  # keys of the bucket after each, up to i
            x = scores[bi, hi, i].masked_fill(~(same & (later <= s)), float("-inf"))
            x[i] = -1e5
            top = x.max()
            e = (x - top).exp()
            parts.append((top, e @ v[bi, hi], e.sum()))
        tops = torch.stack([p[0] for p in parts])
        w = (tops - tops.max()).exp()
        out[bi, hi, i] = sum(wr * num for wr, (_, num, _) in zip(w, parts)) / sum(
            wr * den for wr, (_, _, den) in zip(w, parts)
        )
    return out


@pytest.mark.parametrize("options", OPTIONS["lsh"])
def test_lsh_equals_a_loop_over_buckets(options):
    core = causal_core("lsh", options)
    q, _, v = qkv(core)
    mask = padding()
    want = lsh_reference(core, q, v, mask)
    torch.testing.assert_close(core(q, None, v, mask)[real_rows(mask)], want[real_rows(mask)], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", OPTIONS["synthesizer"])
def test_synthesizer_equals_masked_dense_scores(options):
    core = causal_core("synthesizer", options)
    q, _, v = qkv(core)
    mask = padding()
    if options["variant"] == "dense":
        scores = torch.relu(q @ core.w1 + core.b1[:, None]) @ core.w2[:, :N].transpose(-1, -2)  # (b, h, n, n)
    elif options["rank"] is None:
        scores = core.r[:, :N, :N].expand(2, -1, -1, -1)
    else:
        scores = (core.a[:, :N] @ core.b[:, :N].transpose(-1, -2)).expand(2, -1, -1, -1)
    want = scores.masked_fill(~causal_mask(N, mask), float("-inf")).softmax(-1) @ v
    with torch.no_grad():
        got = core(q, None, v, mask)
    torch.testing.assert_close(got[real_rows(mask)], want.detach()[real_rows(mask)], atol=1e-5, rtol=1e-5)


def test_lsh_two_chunk_windows_have_the_gradient_of_their_view():
    torch.manual_seed(0)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: RowWindows.apply(t, 4, 2), (x,))
    windows = RowWindows.apply(x, 4, 2)  # (3, 8, 3): the chunk before, then its own
    torch.testing.assert_close(windows[1], x[0:8])
    torch.testing.assert_close(windows[0, :4], torch.zeros(4, 3, dtype=torch.float64))


def test_full_step_flops_are_the_last_row_of_the_parallel_form():
    core = causal_core("full", {})
    for n in (1, 17, MAX_LEN):
        assert core.step_flops(n, H) == core.flops(n, H) - core.flops(n - 1, H)
