"""LSH attention against naive shared-QK attention, and its bucket and round properties."""

import pytest
import torch
from torch.nn import functional as F

from nas.errors import ConfigError
from nas.ops.attention import make_core


def shared_qk_attention(q, v, mask, allowed=None):
    """Naive Reformer attention: keys are the unit queries, a token sees itself only as a last
    resort (score -1e5), padding and keys outside `allowed` (n, n) never."""
    n, d = q.shape[-2:]
    scores = q @ F.normalize(q, dim=-1).transpose(-1, -2) / d**0.5  # (b, h, n, n)
    scores = scores.masked_fill(torch.eye(n, dtype=torch.bool), -1e5)
    hidden = ~mask[:, None, None, :] if allowed is None else ~(mask[:, None, None, :] & allowed)
    return scores.masked_fill(hidden, torch.finfo(q.dtype).min).softmax(-1) @ v


def padded_mask():
    mask = torch.ones(3, 50, dtype=torch.bool)
    mask[0, 20:26] = False  # padding in the middle
    mask[1, 31:] = False
    mask[2, 1:] = False  # one real token: it can only attend itself
    return mask


@pytest.mark.parametrize("n_hashes", [1, 3])
def test_one_bucket_one_chunk_equals_full_shared_qk_attention(n_hashes):
    """Every round sees every token then, so rounds agree and their combination changes nothing."""
    torch.manual_seed(0)
    core = make_core("lsh", 16, 2, 64, bucket_size=64, n_buckets=1, n_hashes=n_hashes)
    q, v = torch.randn(3, 2, 50, 16) * 2, torch.randn(3, 2, 50, 16)
    mask = padded_mask()
    out, expected = core(q, None, v, mask), shared_qk_attention(q, v, mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[2, :, 0], v[2, :, 0])  # alone, a token attends itself


@pytest.mark.parametrize("across", [True, False])
def test_one_bucket_sees_own_and_neighbour_chunks(across):
    """With one bucket the sorted order is position order: a query sees exactly its chunk and
    the chunks before and after it (none beyond the ends)."""
    torch.manual_seed(0)
    s, n = 8, 44  # 44 is no multiple of 8: the last chunk is padded internally
    core = make_core("lsh", 16, 2, 64, bucket_size=s, n_buckets=1, attend_across_buckets=across)
    q, v = torch.randn(2, 2, n, 16), torch.randn(2, 2, n, 16)
    chunk = torch.arange(n) // s
    allowed = (chunk[:, None] - chunk[None, :]).abs() <= 1
    mask = torch.ones(2, n, dtype=torch.bool)
    torch.testing.assert_close(core(q, None, v), shared_qk_attention(q, v, mask, allowed), atol=1e-5, rtol=1e-5)


def test_across_buckets_a_query_sees_the_three_chunks_around_its_sorted_place():
    """Reformer's default: after the stable sort by bucket, a query sees every key whose sorted
    rank is in its chunk or a neighbour chunk, whatever that key's bucket."""
    torch.manual_seed(0)
    s, n = 4, 36
    core = make_core("lsh", 16, 1, 64, bucket_size=s, n_buckets=6)
    q, v = torch.randn(1, 1, n, 16) * 2, torch.randn(1, 1, n, 16)
    buckets = core.hash(q)[0, 0, 0]  # (n,)
    assert len(buckets.unique()) > 2  # sorting really moves tokens
    rank = torch.empty(n, dtype=torch.long)
    rank[buckets.argsort(stable=True)] = torch.arange(n)
    chunk = rank // s
    allowed = (chunk[:, None] - chunk[None, :]).abs() <= 1
    mask = torch.ones(1, n, dtype=torch.bool)
    torch.testing.assert_close(core(q, None, v), shared_qk_attention(q, v, mask, allowed), atol=1e-5, rtol=1e-5)


def known_buckets(n_hashes):
    """Rotations onto fixed axes, and queries whose bucket is t in every round: round j hashes
    dims (2j, 2j+1), and a query of bucket t points along +-e_{2j + t % 2} for each j."""
    torch.manual_seed(0)
    d, n = 8, 32
    core = make_core("lsh", d, 1, 64, bucket_size=4, n_buckets=4, n_hashes=n_hashes, attend_across_buckets=False)
    for j in range(n_hashes):
        core.rotations[j] = torch.eye(d)[:, 2 * j : 2 * j + 2]
    sizes = [5, 7, 9, 11]  # bucket sizes that are no multiples of the chunk size 4
    t = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))[torch.randperm(n)]  # (n,)
    q = torch.randn(1, 1, n, d) * 0.1
    for j in range(n_hashes):
        q[0, 0, torch.arange(n), 2 * j + t % 2] = torch.where(t < 2, 3.0, -3.0)
    return core, q, t


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_queries_attend_only_their_bucket(n_hashes):
    core, q, t = known_buckets(n_hashes)
    assert (core.hash(q)[0, 0] == t).all()  # the buckets are the ones constructed
    v = F.one_hot(t, 8).float()[None, None]  # (1, 1, n, 8): a value says its key's bucket
    out = core(q, None, v)
    # Any weight on a key of another bucket would move the output off its own bucket's one-hot.
    torch.testing.assert_close(out, v, atol=1e-6, rtol=0)


def test_rounds_combine_as_one_softmax_over_their_keys():
    """Weighing each round by its normalizer is one softmax over all rounds' keys, a key seen
    in c rounds counted c times. One chunk covering the sequence leaves only the buckets."""
    torch.manual_seed(0)
    core = make_core("lsh", 16, 2, 64, bucket_size=64, n_buckets=4, n_hashes=3, attend_across_buckets=False)
    q, v = torch.randn(2, 2, 40, 16) * 2, torch.randn(2, 2, 40, 16)
    buckets = core.hash(q)  # (b, h, r, n)
    counts = (buckets[..., :, None] == buckets[..., None, :]).sum(2)  # (b, h, n, n)
    assert ((counts > 0) & (counts < 3)).any()  # the rounds disagree somewhere
    n, d = 40, 16
    scores = q @ F.normalize(q, dim=-1).transpose(-1, -2) / d**0.5
    scores = scores.masked_fill(torch.eye(n, dtype=torch.bool), -1e5)
    expected = (scores + counts.float().log()).softmax(-1) @ v  # log 0 = -inf hides the key
    torch.testing.assert_close(core(q, None, v), expected, atol=1e-5, rtol=1e-5)


def test_several_rounds_are_finite_with_gradients():
    torch.manual_seed(0)
    core = make_core("lsh", 16, 2, 128, bucket_size=8, n_hashes=4)
    q = (torch.randn(2, 2, 100, 16) * 3).requires_grad_()
    v = torch.randn(2, 2, 100, 16, requires_grad=True)
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1] = False  # a row with nothing but padding
    out = core(q, None, v, mask)
    out.square().sum().backward()
    assert all(torch.isfinite(t).all() for t in (out, q.grad, v.grad))
    assert core.rotations.shape == (4, 16, 8)  # 128 // 8 = 16 buckets


@pytest.mark.parametrize("max_len, bucket_size, expected", [(128, 8, 16), (72, 8, 10), (16, 64, 2)])
def test_default_bucket_count(max_len, bucket_size, expected):
    assert make_core("lsh", 8, 1, max_len, bucket_size=bucket_size).n_buckets == expected


def test_odd_bucket_count_is_a_config_error():
    with pytest.raises(ConfigError, match="n_buckets must be 1 or even, got 3"):
        make_core("lsh", 8, 1, 64, n_buckets=3)


def test_row_windows_and_permutation_gradients():
    """The hand-written backwards of the chunk windows and the sort permutation (float64)."""
    from nas.ops.attention.lsh import PermuteRows, RowWindows

    torch.manual_seed(0)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: RowWindows.apply(t, 4), (x,))
    windows = RowWindows.apply(x, 4)  # (3, 12, 3): chunks before, at and after
    torch.testing.assert_close(windows[1], x[0:12])
    torch.testing.assert_close(windows[0, :4], torch.zeros(4, 3, dtype=torch.float64))
    # Each row taken twice (two hash rounds), in a random order; `inverse` lists each row's two
    # places in the output side by side.
    index = torch.cat([torch.arange(12), torch.arange(12)])[torch.randperm(24)]
    inverse = torch.argsort(index, stable=True)
    out = PermuteRows.apply(x, index, inverse, 2)
    torch.testing.assert_close(out, x[index])
    assert torch.autograd.gradcheck(lambda t: PermuteRows.apply(t, index, inverse, 2), (x,))


@pytest.mark.parametrize("across", [True, False])
def test_gradients_equal_those_of_the_naive_computation(across):
    """Masking and the self score are applied outside autograd; the gradients must still be
    those of the masked softmax (one bucket, chunks of 8 with neighbours, padding, 2 rounds),
    also for a lone token, whose only key is itself (its constant self score has no gradient)."""
    torch.manual_seed(0)
    s, n = 8, 40
    core = make_core("lsh", 16, 2, 64, bucket_size=s, n_buckets=1, n_hashes=2, attend_across_buckets=across)
    q = (torch.randn(3, 2, n, 16) * 2).requires_grad_()
    v = torch.randn(3, 2, n, 16, requires_grad=True)
    mask = torch.ones(3, n, dtype=torch.bool)
    mask[1, 30:] = False
    mask[2, 1:] = False  # a lone token
    chunk = torch.arange(n) // s
    allowed = (chunk[:, None] - chunk[None, :]).abs() <= 1
    weight = torch.randn(3, 2, n, 16) * mask[:, None, :, None]  # real outputs only
    grads = torch.autograd.grad((core(q, None, v, mask) * weight).sum(), (q, v))
    expected = torch.autograd.grad((shared_qk_attention(q, v, mask, allowed) * weight).sum(), (q, v))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
