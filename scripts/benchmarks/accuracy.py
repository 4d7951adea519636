"""Approximation error of `performer` and `lsh` against exact softmax attention, side by side
with lucidrains' performer-pytorch and reformer-pytorch and with uniform averaging of the values.

Relative output error |approx - exact| / |exact| over all heads, B=1, 4 heads of 64 (D=256),
median over `--draws` draws of data and random features / rotations. Prints JSON.

    python scripts/benchmarks/accuracy.py --lengths 1024 4096 --out bench_accuracy.json

The two references import einops, local_attention and axial_positional_embedding, which the
project's environment lacks, so their estimators are transcribed below from their source
(`REFERENCES` names the commits): only the functions that compute attention, with einops
replaced by plain torch; nothing else is changed (e.g. performer-pytorch's eps = 1e-4 and
reformer-pytorch's look-one-back with wrap-around stay as they are).

Columns, performer: ours (FAVOR++ with the default shrinkage towards the values' mean),
ours_unshrunk (the plain FAVOR++ ratio estimate, shrink=False), favor_plus (A = 0 on the same
features, in this script), ours_relu_kernel, performer_pytorch, uniform.

Data. performer: q, k ~ N(0, I) in a random r-dim subspace of the head dim (r = 64: isotropic,
the hardest case for random features; small r: low intrinsic dimension, as trained attention
often has), scaled so that the logits q.k / sqrt(d) have the requested std (the measured std is
reported). lsh: shared-QK on clustered tokens (clusters of `--cluster` tokens at random
positions), the exact reference being full shared-QK attention with Reformer's self mask.
"""

import math
import sys

import torch
from harness import main, median, parser, settings
from torch.nn import functional as F

REFERENCES = {
    "performer-pytorch": "github.com/lucidrains/performer-pytorch @ fc8b784, performer_pytorch.py: "
    "softmax_kernel, gaussian_orthogonal_random_matrix, linear_attention",
    "reformer-pytorch": "github.com/lucidrains/reformer-pytorch @ 66a19b6, reformer_pytorch.py: "
    "LSHAttention.hash_vectors and .forward (defaults: attend_across_buckets, "
    "allow_duplicate_attention, rehash_each_round)",
}


# --- performer-pytorch, transcribed (einops.repeat -> expand) --------------------------------
def pp_softmax_kernel(data, *, projection_matrix, is_query, normalize_data=True, eps=1e-4):
    b, h, *_ = data.shape
    data_normalizer = (data.shape[-1] ** -0.25) if normalize_data else 1.0
    ratio = projection_matrix.shape[0] ** -0.5
    projection = projection_matrix.expand(b, h, *projection_matrix.shape).type_as(data)
    data_dash = torch.einsum("...id,...jd->...ij", (data_normalizer * data), projection)
    diag_data = data**2
    diag_data = torch.sum(diag_data, dim=-1)
    diag_data = (diag_data / 2.0) * (data_normalizer**2)
    diag_data = diag_data.unsqueeze(dim=-1)
    if is_query:
        data_dash = ratio * (
            torch.exp(data_dash - diag_data - torch.amax(data_dash, dim=-1, keepdim=True).detach()) + eps
        )
    else:
        data_dash = ratio * (
            torch.exp(data_dash - diag_data - torch.amax(data_dash, dim=(-1, -2), keepdim=True).detach()) + eps
        )
    return data_dash.type_as(data)


def pp_orthogonal_matrix_chunk(cols):
    unstructured_block = torch.randn((cols, cols))
    q, _ = torch.linalg.qr(unstructured_block, mode="reduced")
    return q.t()


def pp_gaussian_orthogonal_random_matrix(nb_rows, nb_columns):
    nb_full_blocks = int(nb_rows / nb_columns)
    block_list = [pp_orthogonal_matrix_chunk(nb_columns) for _ in range(nb_full_blocks)]
    remaining_rows = nb_rows - nb_full_blocks * nb_columns
    if remaining_rows > 0:
        block_list.append(pp_orthogonal_matrix_chunk(nb_columns)[:remaining_rows])
    final_matrix = torch.cat(block_list)
    multiplier = torch.randn((nb_rows, nb_columns)).norm(dim=1)  # scaling = 0, the default
    return torch.diag(multiplier) @ final_matrix


def pp_linear_attention(q, k, v):
    k_cumsum = k.sum(dim=-2)
    D_inv = 1.0 / torch.einsum("...nd,...d->...n", q, k_cumsum.type_as(q))
    context = torch.einsum("...nd,...ne->...de", k, v)
    return torch.einsum("...de,...nd,...n->...ne", context, q, D_inv)


def performer_pytorch(q, k, v, features):
    """FastAttention.forward with the softmax kernel (its default), non-causal."""
    projection_matrix = pp_gaussian_orthogonal_random_matrix(features, q.shape[-1])
    q = pp_softmax_kernel(q, projection_matrix=projection_matrix, is_query=True)
    k = pp_softmax_kernel(k, projection_matrix=projection_matrix, is_query=False)
    return pp_linear_attention(q, k, v)


# --- FAVOR+ (Performer paper, positive features, no regulariser), for comparison -----------------
def favor_plus(q, k, v, w):
    """exp(w.x - |x|^2/2) features on the same random features w (m, d) as ours, x = q d^-1/4: the
    unbiased FAVOR+ estimate (A = 0) with the stabilisers that cancel exactly (max per query row,
    one max over all keys and features), and no eps."""
    x, y = q * q.shape[-1] ** -0.25, k * k.shape[-1] ** -0.25
    log_q = x @ w.T - x.square().sum(-1, keepdim=True) / 2  # (b, h, n, m)
    log_k = y @ w.T - y.square().sum(-1, keepdim=True) / 2
    phi_q = (log_q - log_q.amax(-1, keepdim=True)).exp()
    phi_k = (log_k - log_k.amax((-1, -2), keepdim=True)).exp()
    return (phi_q @ (phi_k.transpose(-1, -2) @ v)) / (phi_q @ phi_k.sum(-2)[..., None])


# --- reformer-pytorch, transcribed (LSHAttention with its defaults, no masks, not causal) ----
TOKEN_SELF_ATTN_VALUE = -5e4


def rp_sort_key_val(t1, t2, dim=-1):
    values, indices = t1.sort(dim=dim)
    t2 = t2.expand_as(t1)
    return values, t2.gather(dim, indices)


def rp_batched_index_select(values, indices):
    last_dim = values.shape[-1]
    return values.gather(1, indices[:, :, None].expand(-1, -1, last_dim))


def rp_hash_vectors(n_buckets, vecs, n_hashes):
    batch_size = vecs.shape[0]
    rotations_shape = (1, vecs.shape[-1], n_hashes, n_buckets // 2)
    random_rotations = torch.randn(rotations_shape, dtype=vecs.dtype).expand(batch_size, -1, -1, -1)
    rotated_vecs = torch.einsum("btf,bfhi->bhti", vecs, random_rotations)
    rotated_vecs = torch.cat([rotated_vecs, -rotated_vecs], dim=-1)
    buckets = torch.argmax(rotated_vecs, dim=-1)
    offsets = torch.arange(n_hashes)
    offsets = torch.reshape(offsets * n_buckets, (1, -1, 1))
    return torch.reshape(
        buckets + offsets,
        (
            batch_size,
            -1,
        ),
    )


def reformer_pytorch(qk, v, bucket_size, n_hashes):
    """qk, v: (batch * heads, seqlen, dim), as LSHSelfAttention merges heads into the batch."""
    batch_size, seqlen, dim = qk.shape
    n_buckets = seqlen // bucket_size
    buckets = rp_hash_vectors(n_buckets, qk, n_hashes)
    total_hashes = n_hashes
    ticker = torch.arange(total_hashes * seqlen).unsqueeze(0).expand_as(buckets)
    buckets_and_t = seqlen * buckets + (ticker % seqlen)
    _, sticker = rp_sort_key_val(buckets_and_t, ticker, dim=-1)
    _, undo_sort = sticker.sort(dim=-1)
    st = sticker % seqlen
    sqk = rp_batched_index_select(qk, st)
    sv = rp_batched_index_select(v, st)
    chunk_size = total_hashes * n_buckets
    bq_t = bkv_t = torch.reshape(st, (batch_size, chunk_size, -1))
    bqk = torch.reshape(sqk, (batch_size, chunk_size, -1, dim))
    bv = torch.reshape(sv, (batch_size, chunk_size, -1, dim))
    bq = bqk
    bk = F.normalize(bqk, p=2, dim=-1).type_as(bq)

    def look_one_back(x):
        x_extra = torch.cat([x[:, -1:, ...], x[:, :-1, ...]], dim=1)
        return torch.cat([x, x_extra], dim=2)

    bk = look_one_back(bk)
    bv = look_one_back(bv)
    bkv_t = look_one_back(bkv_t)
    dots = torch.einsum("bhie,bhje->bhij", bq, bk) * (dim**-0.5)
    self_mask = bq_t[:, :, :, None] == bkv_t[:, :, None, :]
    dots.masked_fill_(self_mask, TOKEN_SELF_ATTN_VALUE)
    dots_logsumexp = torch.logsumexp(dots, dim=-1, keepdim=True)
    dots = torch.exp(dots - dots_logsumexp).type_as(dots)
    bo = torch.einsum("buij,buje->buie", dots, bv)
    so = torch.reshape(bo, (batch_size, -1, dim))
    slogits = torch.reshape(
        dots_logsumexp,
        (
            batch_size,
            -1,
        ),
    )
    o = rp_batched_index_select(so, undo_sort)
    logits = slogits.gather(1, undo_sort)
    o = torch.reshape(o, (batch_size, total_hashes, seqlen, dim))
    logits = torch.reshape(logits, (batch_size, total_hashes, seqlen, 1))
    probs = torch.exp(logits - torch.logsumexp(logits, dim=1, keepdim=True))
    return torch.sum(o * probs, dim=1)


# --- measurement -------------------------------------------------------------------------------
def rel_error(approx, exact) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


def performer_data(n, heads, d, rank, logit_std, generator):
    basis = torch.linalg.qr(torch.randn(d, rank, generator=generator))[0].T  # (r, d) orthonormal rows
    scale = math.sqrt(d**0.5 * logit_std / rank**0.5)  # std(q.k / sqrt(d)) = logit_std
    q, k = (torch.randn(1, heads, n, rank, generator=generator) @ basis * scale for _ in range(2))
    v = torch.randn(1, heads, n, d, generator=generator)
    return q, k, v  # (1, h, n, d) each


def lsh_data(n, heads, d, cluster, sharpness, generator):
    """Tokens in clusters of `cluster` at random positions: center + noise, scaled by sharpness."""
    centers = F.normalize(torch.randn(heads, n // cluster, d, generator=generator), dim=-1)
    assign = torch.stack([torch.randperm(n, generator=generator) // cluster for _ in range(heads)])
    qk = centers.gather(1, assign[..., None].expand(-1, -1, d))  # (h, n, d)
    qk = (qk + 0.25 * torch.randn(heads, n, d, generator=generator) / d**0.5) * sharpness
    return qk[None], torch.randn(1, heads, n, d, generator=generator)  # (1, h, n, d) each


def shared_qk_exact(qk):
    """Full shared-QK attention weights (1, h, n, n), self masked as Reformer's FullQKAttention."""
    d = qk.shape[-1]
    dots = qk @ F.normalize(qk, dim=-1).transpose(-1, -2) * d**-0.5
    dots.diagonal(dim1=-2, dim2=-1).fill_(TOKEN_SELF_ATTN_VALUE)
    return dots.softmax(-1)


def measure_performer(args, n, rank, logit_std):
    from nas.ops.attention import make_core

    errors = {
        "ours": [],
        "ours_unshrunk": [],
        "favor_plus": [],
        "ours_relu_kernel": [],
        "performer_pytorch": [],
        "uniform": [],
    }
    logit_stds = []
    for draw in range(args.draws):
        generator = torch.Generator().manual_seed(draw)
        q, k, v = performer_data(n, args.heads, args.head_dim, rank, logit_std, generator)
        logit_stds.append((q[0, 0, :512] @ k[0, 0, :512].T / args.head_dim**0.5).std().item())
        exact = F.scaled_dot_product_attention(q, k, v)
        torch.manual_seed(1000 + draw)
        ours = make_core("performer", args.head_dim, args.heads, n, features=args.features)
        unshrunk = make_core("performer", args.head_dim, args.heads, n, features=args.features, shrink=False)
        unshrunk.load_state_dict(ours.state_dict())  # the same random features
        relu = make_core("performer", args.head_dim, args.heads, n, features=args.features, kernel="relu")
        torch.manual_seed(2000 + draw)
        outputs = {
            "ours": ours(q, k, v),
            "ours_unshrunk": unshrunk(q, k, v),
            "favor_plus": favor_plus(q, k, v, ours.features),
            "ours_relu_kernel": relu(q, k, v),
            "performer_pytorch": performer_pytorch(q, k, v, args.features),
            "uniform": v.mean(2, keepdim=True).expand_as(v),
        }
        for name, out in outputs.items():
            errors[name].append(rel_error(out, exact))
    row = {name: round(median(e), 4) for name, e in errors.items()}
    row["measured_logit_std"] = round(median(logit_stds), 3)
    return row


def measure_lsh(args, n, n_hashes):
    from nas.ops.attention import make_core

    errors = {"ours": [], "reformer_pytorch": [], "uniform": []}
    top_mass = []
    for draw in range(args.draws):
        generator = torch.Generator().manual_seed(draw)
        qk, v = lsh_data(n, args.heads, args.head_dim, args.cluster, args.sharpness, generator)
        weights = shared_qk_exact(qk)  # (1, h, n, n)
        top_mass.append(weights.topk(args.bucket_size, dim=-1).values.sum(-1).mean().item())
        exact = weights @ v
        torch.manual_seed(1000 + draw)
        ours = make_core("lsh", args.head_dim, args.heads, n, bucket_size=args.bucket_size, n_hashes=n_hashes)
        torch.manual_seed(2000 + draw)
        theirs = reformer_pytorch(qk[0], v[0], args.bucket_size, n_hashes)[None]  # heads as batch
        outputs = {
            "ours": ours(qk, None, v),
            "reformer_pytorch": theirs,
            "uniform": v.mean(2, keepdim=True).expand_as(v),
        }
        for name, out in outputs.items():
            errors[name].append(rel_error(out, exact))
    row = {name: round(median(e), 4) for name, e in errors.items()}
    row[f"top{args.bucket_size}_weight"] = round(median(top_mass), 4)
    return row


def sweep(args) -> dict:
    torch.set_num_threads(args.threads)
    results: dict = {"performer": {}, "lsh": {}}
    for n in args.lengths:
        if args.only != "lsh":
            for rank in args.ranks:
                for std in args.logit_stds:
                    key = f"N={n} rank={rank} logit_std={std}"
                    results["performer"][key] = measure_performer(args, n, rank, std)
                    print(f"performer {key} {results['performer'][key]}", file=sys.stderr)
        if args.only != "performer":
            for r in args.rounds:
                key = f"N={n} rounds={r}"
                results["lsh"][key] = measure_lsh(args, n, r)
                print(f"lsh {key} {results['lsh'][key]}", file=sys.stderr)
    return {"settings": settings(args), "references": REFERENCES, "results": results}


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096])
    cli.add_argument("--logit-stds", nargs="+", type=float, default=[0.33, 1.0, 3.0])
    cli.add_argument(
        "--ranks", nargs="+", type=int, default=[64, 4], help="intrinsic dimension of performer's q/k (64 = isotropic)"
    )
    cli.add_argument("--rounds", nargs="+", type=int, default=[1, 4])
    cli.add_argument("--heads", type=int, default=4)
    cli.add_argument("--head-dim", type=int, default=64)
    cli.add_argument("--features", type=int, default=256)
    cli.add_argument("--bucket-size", type=int, default=64)
    cli.add_argument("--cluster", type=int, default=64, help="lsh: tokens per cluster")
    cli.add_argument("--sharpness", type=float, default=40.0, help="lsh: norm of the tokens")
    cli.add_argument("--draws", type=int, default=5)
    cli.add_argument("--threads", type=int, default=2)
    cli.add_argument("--only", choices=["performer", "lsh"])
    main(cli, sweep)
