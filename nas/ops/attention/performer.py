"""Performer attention with FAVOR+ positive orthogonal random features
(Choromanski et al. 2020, https://arxiv.org/abs/2009.14794).

exp(q.k / sqrt(d)) is approximated by phi(q).phi(k) with m random features, so attention costs
O(n m d) instead of O(n^2 d).
# b batch, h heads, n sequence, d head dim, m random features
"""
import dataclasses
import math

import torch
from torch import Tensor
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore
from nas.ops.attention.registry import ATTENTION


@dataclasses.dataclass(frozen=True)
class PerformerConfig:
    features: int = 256  # m random features; the approximation error falls like 1/sqrt(m)

    def __post_init__(self):
        if self.features < 1:
            raise ValueError(f"features must be >= 1, got {self.features}")


def orthogonal_gaussian(m: int, d: int) -> Tensor:
    """(m, d) random features from the global torch RNG: blocks of d orthogonal rows, each row
    rescaled to a chi(d) length so that every row alone is still a N(0, I) sample."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, r = torch.linalg.qr(torch.randn(d, d))
        blocks.append((q * r.diagonal().sign()).T)  # the sign fix makes q uniform (Haar)
    directions = torch.cat(blocks)[:m]  # (m, d), unit rows
    lengths = torch.randn(m, d).norm(dim=1, keepdim=True)  # (m, 1)
    return directions * lengths


@ATTENTION.register("performer")
class PerformerAttention(AttentionCore):
    Config = PerformerConfig

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None):
        super().__init__(head_dim, max_heads, max_len, config)
        # One draw shared by all heads, in a buffer so that checkpoints and extracted subnets
        # keep exactly the features the supernet was trained with.
        self.register_buffer("features", orthogonal_gaussian(self.config.features, head_dim))

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Replace the random features with a fresh draw from the global torch RNG."""
        self.features.copy_(orthogonal_gaussian(*self.features.shape))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        # The features' exponentials and the sums over keys lose too much in bf16 (8 bits of
        # mantissa): under autocast they run in fp32, and the result returns in the input dtype.
        with torch.autocast(q.device.type, enabled=False):
            out = self._forward(q.float(), k.float(), v.float(), mask)
        return out.to(q.dtype)

    def _forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        w = self.features.to(q.dtype)  # (m, d)
        m, d = w.shape
        q, k = q * d ** -0.25, k * d ** -0.25  # so that q.k of the scaled vectors is q.k / sqrt(d)
        # phi(x) = exp(w.x - |x|^2 / 2) / sqrt(m). A factor shared by all features of one query
        # cancels between numerator and denominator, so queries drop exp(-|q|^2 / 2) and
        # subtract their max feature instead (the stabilizer). 1/sqrt(m) would cancel too; it is
        # kept, inside the exp, so that sums over many keys stay within half precision.
        log_root_m = math.log(m) / 2
        wq = q @ w.T  # (b, h, n, m)
        phi_q = torch.exp(wq - (wq.detach().amax(-1, keepdim=True) + log_root_m))  # (b, h, n, m)
        wk = k @ w.T - k.square().sum(-1, keepdim=True) / 2  # (b, h, n, m)
        # Keys share one stabilizer per (b, h), which cancels as well: the max over real keys
        # only, so that padding cannot change it and junk keys cannot overflow the exp.
        key_max = wk.detach().amax(-1)  # (b, h, n)
        if mask is not None:
            key_max = key_max.masked_fill(~mask[:, None], torch.finfo(q.dtype).min)
        shift = key_max.amax(-1)[..., None, None] + log_root_m  # (b, h, 1, 1)
        if mask is not None:
            # The dtype's max as the shift of padded keys makes their features exactly zero.
            real = mask[:, None, :, None]  # (b, 1, n, 1)
            shift = torch.where(real, shift, torch.finfo(q.dtype).max)  # (b, h, n, 1)
        phi_k = torch.exp(wk - shift)  # (b, h, n, m)
        v1 = F.pad(v, (0, 1), value=1.0)  # (b, h, n, d+1): the ones column yields the normalizer
        kv = phi_k.transpose(-2, -1) @ v1  # (b, h, m, d+1)
        out = phi_q @ kv  # (b, h, n, d+1)
        num, den = out[..., :d], out[..., d:]  # (b, h, n, d), (b, h, n, 1)
        # All-padding rows have 0 / 0: dividing by 1 there keeps values and grads finite.
        return num / den.masked_fill(den == 0, 1.0)  # (b, h, n, d)

    def flops(self, n: int, heads: int) -> int:
        m, d = self.config.features, self.head_dim
        # phi(q), phi(k); phi(k)^T [v 1]; phi(q) (that); the division. Elementwise exps are not
        # counted, as `full` does not count its softmax.
        return heads * (2 * 2 * n * d * m + 2 * 2 * n * m * (d + 1) + n * d)

    def activation_elements(self, n: int, heads: int) -> int:
        m, d = self.config.features, self.head_dim
        # phi(q), phi(k); [v 1] and the output; kv
        return heads * (2 * n * m + 2 * n * (d + 1) + m * (d + 1))
