"""Performer attention (Choromanski et al. 2020, https://arxiv.org/abs/2009.14794) with FAVOR++
features (Likhosherstov et al. 2022, "Chefs' Random Tables", https://arxiv.org/abs/2205.15317).

kernel softmax: exp(q.k / sqrt(d)) is estimated by phi(q).phi(k) with m positive random features
whose free parameter A is chosen per head from the data to minimise the estimator's variance
(A = 0 is FAVOR+). kernel relu: the paper's generalized attention, phi(x) = relu(w.x).
Either way attention costs O(n m d) instead of O(n^2 d).

The causal form is the paper's unidirectional one (sec. 2.6): prefix sums of phi(k_j) [v_j 1]
over j <= i, computed in chunks of `CAUSAL_CHUNK` positions (a masked (c, c) product inside a
chunk, the prefix sums across chunks), so memory stays linear in n; the step form carries the
prefix sums. Its softmax kernel is FAVOR+ (A = 0): FAVOR++'s A is fit to all queries and keys,
the future's included. Keys are stabilised by |w|^2 / 2 per feature, the bound of
w.k - |k|^2 / 2, a shift that needs no other key; shrink uses prefix means and sums
(`causal_shrink_to_mean`).

The kernel estimate is unbiased, but on isotropic 64-dim inputs at logit std >= 1 its variance
(e^11.6 relative, per feature, at std 1) leaves each query's ratio estimate mostly noise, worse
than averaging the values. `shrink` (softmax, the default) moves each head's output towards the
values' mean by signal / (signal + noise) estimated from the two halves of the features
(shrink_to_mean, the James-Stein idea): a biased output, from unbiased features.
# b batch, h heads, n sequence, d head dim, m random features
"""

import dataclasses
import math

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION

KERNELS = ("softmax", "relu")
CAUSAL_CHUNK = 128  # positions per chunk of the causal form: (c, c) scores inside, prefix sums across


@dataclasses.dataclass(frozen=True)
class PerformerConfig:
    features: int = 256  # m random features; the approximation error falls like 1/sqrt(m)
    kernel: str = "softmax"  # softmax: FAVOR++ estimate of softmax attention; relu: ReLU kernel
    redraw_every: int = 0  # training forwards between fresh feature draws (Performer sec. 4); 0 never
    shrink: bool = True  # softmax: shrink each head's output towards the values' mean by signal/noise

    def __post_init__(self):
        if self.features < 1:
            raise ValueError(f"features must be >= 1, got {self.features}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.redraw_every < 0:
            raise ValueError(f"redraw_every must be >= 0, got {self.redraw_every}")


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """(m, d) random features on the CPU: blocks of d orthogonal rows, each row rescaled to a chi(d) length
    so that every row alone is still a N(0, I) sample."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, device="cpu"))
        blocks.append((q * r.diagonal().sign()).T)  # the sign fix makes q uniform (Haar)
    directions = torch.cat(blocks)[:m]  # (m, d), unit rows
    lengths = torch.randn(m, d, generator=generator, device="cpu").norm(dim=1, keepdim=True)  # (m, 1)
    return directions * lengths


def favor_pp_a(x: Tensor, y: Tensor, real: Tensor | None) -> Tensor:
    """FAVOR++'s variance-optimal A per (b, h) for scaled queries x and keys y (b, h, n, d).

    The estimator exp(A|w|^2 + B w.x - |x|^2/2) exp(A|w|^2 + B w.y - |y|^2/2) (1-4A)^(d/2), with
    B = sqrt(1 - 4A), is unbiased for exp(x.y) for every A < 1/8. Its log second moment, averaged
    over query-key pairs, is d log(1-4A) - d/2 log(1-8A) + 2 rho (1-4A)/(1-8A) + const with
    rho = mean |x_i + y_j|^2; setting the derivative to zero gives 16 d A^2 + (4 rho - 2d) A - rho
    = 0, whose smaller root is the minimum (the paper's eq. for A*).
    """
    d = x.shape[-1]
    if real is None:
        mean_x, mean_y = x.mean(2), y.mean(2)  # (b, h, d)
        sq_x, sq_y = x.square().sum(-1).mean(2), y.square().sum(-1).mean(2)  # (b, h)
    else:
        w = real[:, None, :, None].to(x.dtype)  # (b, 1, n, 1)
        count = w.sum(2).clamp_min(1)  # (b, 1, 1)
        mean_x, mean_y = (x * w).sum(2) / count, (y * w).sum(2) / count  # (b, h, d)
        sq_x = (x.square() * w).sum((2, 3)) / count[..., 0]  # (b, h)
        sq_y = (y.square() * w).sum((2, 3)) / count[..., 0]
    rho = sq_x + sq_y + 2 * (mean_x * mean_y).sum(-1)  # (b, h): mean over pairs of |x_i + y_j|^2
    return ((2 * d - 4 * rho) - torch.sqrt((4 * rho - 2 * d) ** 2 + 64 * d * rho)) / (32 * d)


def favor_pp_log_features(x: Tensor, w: Tensor, a: Tensor, per_query: bool = True) -> Tensor:
    """log phi(x) of FAVOR++ (Chefs' Random Tables, eq. 7): scaled inputs x (b, h, n, d), features
    w (m, d), A (b, h) -> (b, h, n, m), with phi(x) = D exp(A|w|^2 + B w.x - |x|^2/2) / sqrt(m),
    B = sqrt(1 - 4A), D = (1 - 4A)^(d/4): then E_w[phi(x).phi(y)] = exp(x.y) exactly.

    per_query=False drops the terms that are the same for all features of one row (D, sqrt(m),
    |x|^2/2), which cancel in attention's ratio.
    """
    m, d = w.shape
    a = a[..., None, None]  # (b, h, 1, 1)
    log_phi = torch.sqrt(1 - 4 * a) * (x @ w.T) + a * w.square().sum(-1)  # (b, h, n, m)
    if per_query:
        const = d / 4 * torch.log1p(-4 * a) - math.log(m) / 2  # (b, h, 1, 1)
        log_phi = log_phi + const - x.square().sum(-1, keepdim=True) / 2
    return log_phi


@ATTENTION.register("performer")
class PerformerAttention(AttentionCore):
    Config = PerformerConfig

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        # The features are a pure function of (seed, draws): buffers, so that checkpoints and
        # extracted subnets keep exactly the draw the supernet uses, and every DDP rank redraws
        # the same features without touching the global RNG stream.
        m, d = self.config.features, head_dim
        if torch.empty(()).is_meta:  # a skeleton whose buffers are replaced (Supernet.extract)
            seed, features = 0, torch.empty(m, d)
        else:
            seed = int(torch.randint(2**31 - 1, (), device="cpu"))
            features = orthogonal_gaussian(m, d, self._generator(seed, 0))
        self.register_buffer("seed", torch.tensor(seed))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))  # redraws so far
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training forwards
        self.register_buffer("features", features)  # (m, d)

    @staticmethod
    def _generator(seed: int, draws: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 1_000_003 + draws)

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Replace the random features with the next draw of this core's seed."""
        self.draws += 1
        generator = self._generator(int(self.seed), int(self.draws))
        self.features.copy_(orthogonal_gaussian(*self.features.shape, generator))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        every = self.config.redraw_every
        if self.training and every:
            if int(self.steps) % every == 0 and int(self.steps) > 0:
                self.redraw_features()
            self.steps += 1
        # The features' exponentials and the sums over keys lose too much in bf16 (8 bits of
        # mantissa): under autocast they run in fp32, and the result returns in the input dtype.
        with torch.autocast(q.device.type, enabled=False):
            out = self._forward(q.float(), k.float(), v.float(), mask)
        return out.to(q.dtype)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if self.causal:
            return self._forward_causal(q, k, v, mask)
        w = self.features.to(q.dtype)  # (m, d)
        d = w.shape[1]
        scale = d**-0.25  # on q and k, so that q.k of the scaled vectors is q.k / sqrt(d)
        if self.config.kernel == "relu":
            w_t = (w * scale).T  # (d, m)
            phi_q = (q @ w_t).relu_()  # (b, h, n, m); in place: relu's backward needs only its output
            phi_k = (k @ w_t).relu_()  # (b, h, n, m)
            if mask is not None:
                phi_k = phi_k * mask[:, None, :, None]  # padded keys have no features
        else:
            phi_q, phi_k = self._softmax_features(q, k, w, scale, mask)
        v1 = F.pad(v, (0, 1), value=1.0)  # (b, h, n, d+1): the ones column yields the normalizer
        kv = phi_k.transpose(-2, -1) @ v1  # (b, h, m, d+1)
        out = phi_q @ kv  # (b, h, n, d+1)
        if self._shrinks():
            # Shrink's estimate needs the product split by the two halves of the features, as
            # values only: the first half without a graph (the second is the difference), so the
            # gradient flows through the one whole product, with no slices to scatter back.
            half = w.shape[0] // 2
            with torch.no_grad():
                first = phi_q[..., :half] @ kv[..., :half, :]  # (b, h, n, d+1)
            return shrink_to_mean(out, first, v, mask)  # (b, h, n, d)
        num, den = out[..., :d], out[..., d:]  # (b, h, n, d), (b, h, n, 1)
        # All-padding rows have 0 / 0: dividing by 1 there keeps values and grads finite.
        return num / den.masked_fill(den == 0, 1.0)  # (b, h, n, d)

    @staticmethod
    def _softmax_features(q: Tensor, k: Tensor, w: Tensor, scale: float, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """FAVOR++ features (favor_pp_log_features) of q and k (b, h, n, d) -> (b, h, n, m) each,
        up to factors that cancel in attention's ratio: a shift per feature and one per query.

        Every term of the log features goes into one GEMM per side by augmenting the inputs
        ([k, |k|^2] and [q, 1]), so that only the shift and the exp remain as (n, m) passes,
        both in place: the exp's backward needs only its output, the GEMM's only its inputs.
        """
        # A from detached statistics (any A is unbiased); detach, not no_grad, so that
        # torch.export traces the op.
        a = favor_pp_a(q.detach() * scale, k.detach() * scale, mask)[..., None, None]  # (b, h, 1, 1)
        w_t = torch.sqrt(1 - 4 * a) * scale * w.T  # (b, h, d, m): B w, on unscaled inputs
        a_w = a * w.square().sum(-1)  # (b, h, 1, m)
        # log phi(k) + const = B w.k' + A|w|^2 - |k'|^2/2 with k' = k * scale; A|w|^2 is the
        # same for every key of a feature, so the per-feature shift below absorbs it.
        half_sq = torch.full_like(a_w, -(scale**2) / 2)  # (b, h, 1, m)
        k_aug = torch.cat([k, k.square().sum(-1, keepdim=True)], -1)  # (b, h, n, d+1)
        log_k = k_aug @ torch.cat([w_t, half_sq], -2)  # (b, h, n, m)
        # One shift per feature, shared by all keys and taken back on the query side, cancels
        # exactly (no epsilon pulling the result to uniform); the max over real keys keeps every
        # feature's largest key at 1, so no column underflows and padding cannot move the shift.
        lowest = torch.finfo(q.dtype).min
        if mask is not None:
            log_k = log_k.masked_fill_(~mask[:, None, :, None], lowest)  # padded keys: exp -> 0
        shift = log_k.detach().amax(2, keepdim=True)  # (b, h, 1, m)
        shift = shift.masked_fill_(shift == lowest, 0.0)  # no real key at all: any shift will do
        phi_k = log_k.sub_(shift).exp_()  # (b, h, n, m)
        # Queries: B w.q' + A|w|^2, plus the keys' A|w|^2 and shift taken back.
        q_aug = F.pad(q, (0, 1), value=1.0)  # (b, h, n, d+1)
        log_q = q_aug @ torch.cat([w_t, 2 * a_w + shift], -2)  # (b, h, n, m)
        # A factor shared by all features of one query cancels between numerator and denominator.
        phi_q = log_q.sub_(log_q.detach().amax(-1, keepdim=True)).exp_()  # (b, h, n, m)
        return phi_q, phi_k

    def _causal_features(self, q: Tensor, k: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Features of the causal form, q and k (b, h, n, d) -> (b, h, n, m) each, up to a factor
        per feature (shared by all keys, taken back on the query side) and one per query: from
        each token alone, so that a key's features never change as the sequence grows."""
        w = self.features.to(q.dtype)  # (m, d)
        scale = w.shape[1] ** -0.25  # on q and k, so that q.k of the scaled vectors is q.k / sqrt(d)
        if self.config.kernel == "relu":
            w_t = (w * scale).T  # (d, m)
            phi_q, phi_k = (q @ w_t).relu_(), (k @ w_t).relu_()  # (b, h, n, m)
            return phi_q, phi_k if mask is None else phi_k * mask[:, None, :, None]
        # FAVOR+: log phi(k) = w.k' - |k'|^2/2 <= |w|^2/2 (equal at k' = w), so keys shifted by
        # |w|^2/2 never overflow; the queries take the shift back, then their own maximum out.
        w_t = scale * w.T  # (d, m)
        bound = w.square().sum(-1) / 2  # (m,)
        k_aug = torch.cat([k, k.square().sum(-1, keepdim=True)], -1)  # (b, h, n, d+1)
        log_k = k_aug @ torch.cat([w_t, torch.full_like(w_t[:1], -(scale**2) / 2)])  # (b, h, n, m)
        log_k = log_k.sub_(bound)
        if mask is not None:
            log_k = log_k.masked_fill_(~mask[:, None, :, None], torch.finfo(q.dtype).min)  # padded keys: exp -> 0
        log_q = F.pad(q, (0, 1), value=1.0) @ torch.cat([w_t, bound[None]])  # (b, h, n, m)
        phi_q = log_q.sub_(log_q.detach().amax(-1, keepdim=True)).exp_()  # (b, h, n, m)
        return phi_q, log_k.exp_()

    def _forward_causal(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        d = v.shape[-1]
        phi_q, phi_k = self._causal_features(q, k, mask)  # (b, h, n, m)
        v1 = F.pad(v, (0, 1), value=1.0)  # (b, h, n, d+1): the ones column yields the normalizer
        out = causal_linear_attention(phi_q, phi_k, v1, CAUSAL_CHUNK)  # (b, h, n, d+1)
        if self._shrinks():
            half = phi_q.shape[-1] // 2
            with torch.no_grad():
                first = causal_linear_attention(phi_q[..., :half], phi_k[..., :half], v1, CAUSAL_CHUNK)
            return causal_shrink_to_mean(out, first, v, mask)  # (b, h, n, d)
        num, den = out[..., :d], out[..., d:]  # (b, h, n, d), (b, h, n, 1)
        return num / den.masked_fill(den == 0, 1.0)  # (b, h, n, d)

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        m, d = self.config.features, self.head_dim
        sums = torch.zeros(batch, heads, m, d + 1, device=device, dtype=dtype)  # (b, h, m, d+1): sum phi(k) [v 1]
        if not self._shrinks():
            return (sums,)
        # shrink's running sums: of the values, and of the signal and noise terms
        return sums, torch.zeros(batch, heads, d + 2, device=device, dtype=dtype)  # (b, h, d+2)

    def step(self, q, k, v, state, position):
        with torch.autocast(q.device.type, enabled=False):  # fp32, as forward
            out, new_state = self._step(q.float(), k.float(), v.float(), [x.float() for x in state], position)
        return out.to(q.dtype), tuple(x.to(s.dtype) for x, s in zip(new_state, state))

    def _step(self, q, k, v, state, position):
        d = v.shape[-1]
        phi_q, phi_k = self._causal_features(q, k, None)  # (b, h, 1, m)
        v1 = F.pad(v, (0, 1), value=1.0)  # (b, h, 1, d+1)
        sums = state[0] + phi_k.transpose(-1, -2) @ v1  # (b, h, m, d+1)
        out = phi_q @ sums  # (b, h, 1, d+1)
        if not self._shrinks():
            return out[..., :d] / out[..., d:].masked_fill(out[..., d:] == 0, 1.0), (sums,)
        half = phi_q.shape[-1] // 2
        first = phi_q[..., :half] @ sums[..., :half, :]  # (b, h, 1, d+1)
        o, o1, o2 = (x[..., :d] / x[..., d:].masked_fill(x[..., d:] == 0, 1.0) for x in (out, first, out - first))
        running = state[1]  # (b, h, d+2)
        values = running[..., :d] + v[:, :, 0]  # (b, h, d)
        u = (values / (position + 1).to(v.dtype))[:, :, None]  # (b, h, 1, d): the mean so far
        signal = running[..., d] + ((o1 - u) * (o2 - u)).sum((-2, -1))  # (b, h)
        noise = running[..., d + 1] + (o1 - o2).square().sum((-2, -1)) / 4  # (b, h)
        kept = signal.clamp_min(0)
        beta = (kept / (kept + noise).clamp_min(torch.finfo(noise.dtype).tiny))[..., None, None]  # (b, h, 1, 1)
        return u + beta * (o - u), (sums, torch.cat([values, signal[..., None], noise[..., None]], -1))

    def _shrinks(self) -> bool:
        return self.config.kernel == "softmax" and self.config.shrink and self.config.features >= 2

    def flops(self, n: int, heads: int) -> int:
        m, d = self.config.features, self.head_dim
        if self.causal:
            return heads * self._causal_flops(n)
        # phi(q), phi(k); phi(k)^T [v 1]; phi(q) (that); the division. Elementwise exps are not
        # counted, as `full` does not count its softmax.
        total = 2 * 2 * n * d * m + 2 * 2 * n * m * (d + 1) + n * d
        if self._shrinks():
            # the halves' two extra divisions, the mean of v, the signal and noise sums, u + beta (o - u)
            total += 2 * n * d + n * d + 2 * 4 * n * d + 3 * n * d
        return heads * total

    def _causal_flops(self, n: int) -> int:
        """One head's forward of the causal form: phi(q), phi(k), then per chunk phi(k)^T [v 1],
        phi(q) (prefix sums) and the masked (c, c) product; with shrink the first half again."""
        m, d = self.config.features, self.head_dim
        c = min(CAUSAL_CHUNK, n)
        padded = -(-n // c) * c

        def attention(features: int) -> int:
            return 2 * 2 * padded * features * (d + 1) + 2 * padded * c * (features + d + 1)

        total = 2 * 2 * n * d * m + attention(m) + n * d
        if self._shrinks():
            total += attention(m // 2) + 2 * n * d + 2 * 4 * n * d + 3 * n * d  # as the bidirectional form
        return total

    def activation_elements(self, n: int, heads: int) -> int:
        m, d = self.config.features, self.head_dim
        # phi(q), phi(k); [v 1] and the output; kv; with shrink the two halves' outputs (beta
        # and the rest of its estimate are detached)
        shrink = n * (d + 1) if self._shrinks() else 0
        if self.causal:  # each chunk's phi(k)^T [v 1] and prefix sum, its (c, c) scores; the prefix means
            c = min(CAUSAL_CHUNK, n)
            chunks = -(-n // c)
            prefix = n * d if self._shrinks() else 0
            return heads * (2 * n * m + 2 * n * (d + 1) + 2 * chunks * m * (d + 1) + chunks * c * c + shrink + prefix)
        return heads * (2 * n * m + 2 * n * (d + 1) + m * (d + 1) + shrink)

    def state_elements(self, n: int, heads: int) -> int:
        m, d = self.config.features, self.head_dim
        return heads * (m * (d + 1) + (d + 2 if self._shrinks() else 0))  # prefix sums; shrink's sums

    def step_flops(self, n: int, heads: int) -> int:
        m, d = self.config.features, self.head_dim
        half = 2 * (m // 2) * (d + 1) if self._shrinks() else 0  # the first half's read
        return heads * (2 * 2 * d * m + 2 * 2 * m * (d + 1) + half)  # phi(q), phi(k); update and read the sums


def causal_linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, chunk: int) -> Tensor:
    """out_i = phi_q_i . sum_{j <= i} phi_k_j v_j^T, in chunks of `chunk` positions: inside a chunk
    the masked (c, c) product, across chunks exclusive prefix sums of phi_k^T v, so that nothing
    of size n x n or n x m x d exists.

    Shape: phi_q, phi_k (b, h, n, m), v (b, h, n, e) -> (b, h, n, e).
    """
    b, h, n, m = phi_q.shape
    c = min(chunk, n)
    pad = -n % c  # padded keys have zero features and add nothing
    phi_q, phi_k, v = (F.pad(x, (0, 0, 0, pad)).view(b, h, -1, c, x.shape[-1]) for x in (phi_q, phi_k, v))
    kv = phi_k.transpose(-1, -2) @ v  # (b, h, T, m, e): each chunk's sum
    before = F.pad(kv.cumsum(2)[:, :, :-1], (0, 0, 0, 0, 1, 0))  # (b, h, T, m, e): the chunks before
    within = (phi_q @ phi_k.transpose(-1, -2)).tril_()  # (b, h, T, c, c): j <= i inside the chunk
    out = phi_q @ before + within @ v  # (b, h, T, c, e)
    return out.view(b, h, -1, v.shape[-1])[:, :, :n]


def causal_shrink_to_mean(out: Tensor, first: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """`shrink_to_mean` with every sum a prefix sum: query i shrinks towards u_i, the mean of the
    values up to i, by beta_i = S_i / (S_i + E_i) with S_i, E_i summed over queries j <= i (each
    against its own u_j). Shapes as `shrink_to_mean`."""
    d = v.shape[-1]
    halves = (first, out.detach() - first)
    o, o1, o2 = (x[..., :d] / x[..., d:].masked_fill(x[..., d:] == 0, 1.0) for x in (out, *halves))  # (b, h, n, d)
    real = torch.ones_like(v[:1, :1, :, :1]) if mask is None else mask[:, None, :, None].to(v.dtype)  # (., 1, n, 1)
    u = (v * real).cumsum(2) / real.cumsum(2).clamp_min(1)  # (b, h, n, d)
    u_ = u.detach()
    signal = (((o1 - u_) * (o2 - u_)).sum(-1, keepdim=True) * real).cumsum(2).clamp_min_(0)  # (b, h, n, 1)
    noise = ((o1 - o2).square().sum(-1, keepdim=True) * real).cumsum(2) / 4  # (b, h, n, 1)
    beta = signal / (signal + noise).clamp_min(torch.finfo(noise.dtype).tiny)  # (b, h, n, 1)
    return u + beta * (o - u)  # (b, h, n, d)


def shrink_to_mean(out: Tensor, first: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Shrink each head's ratio estimate o towards the mean u of the values, u + beta (o - u), by
    a factor estimated from the two halves of the features (o1, o2: their ratio estimates).

    Model o = x + e with x the exact output and e the features' noise: the best factor is
    |x - u|^2 / (|x - u|^2 + |e|^2), summed over the head's real queries. The halves' errors are
    nearly independent, so (o1 - u).(o2 - u) estimates |x - u|^2 without the noise's square, and
    |o1 - o2|^2 / 4 estimates |e|^2 of their average, i.e. of all m features:
    beta = S / (S + E), S = max(0, sum_i (o1_i - u).(o2_i - u)), E = sum_i |o1_i - o2_i|^2 / 4.
    Where the features carry no signal S is about 0 and the output is the mean of the values;
    where they estimate well beta is near 1. beta is a constant for the gradient (detached).

    Args:
        out: (b, h, n, d+1), phi_q @ [N, S] (numerator, denominator); the gradient flows through it.
        first: (b, h, n, d+1), the first half of the features' share of `out`,
            phi_q[..., :half] @ [N, S][:half, :]; only its value is used (the second half's share
            is out - first).
        v: (b, h, n, d). mask: (b, n), True = real token, or None.
    Returns:
        (b, h, n, d).
    """
    d = v.shape[-1]
    halves = (first, out.detach() - first)
    ratios = [x[..., :d] / x[..., d:].masked_fill(x[..., d:] == 0, 1.0) for x in (out, *halves)]
    o, o1, o2 = ratios  # (b, h, n, d) each; all-padding rows: 0 / 1
    if mask is None:
        u = v.mean(2, keepdim=True)  # (b, h, 1, d)
        real = torch.ones_like(o[..., :1])  # (b, h, n, 1)
    else:
        real = mask[:, None, :, None].to(v.dtype)  # (b, 1, n, 1)
        u = (v * real).sum(2, keepdim=True) / real.sum(2, keepdim=True).clamp_min(1)  # (b, h, 1, d)
    u_ = u.detach()
    signal = ((o1 - u_) * (o2 - u_)).sum(-1, keepdim=True)  # (b, h, n, 1)
    signal = (signal * real).sum(2, keepdim=True).clamp_min_(0)  # (b, h, 1, 1)
    noise = ((o1 - o2).square().sum(-1, keepdim=True) * real).sum(2, keepdim=True) / 4  # (b, h, 1, 1)
    beta = signal / (signal + noise).clamp_min(torch.finfo(noise.dtype).tiny)  # (b, h, 1, 1)
    return u + beta * (o - u)  # (b, h, n, d)
