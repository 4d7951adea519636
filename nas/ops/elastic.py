"""Weight-entangled layers: hold the largest matrix, compute with its leading slice.

Smaller choices share the leading rows/columns of the largest one, as in HAT, AutoFormer and OFA.
"""

from __future__ import annotations

from torch import Tensor, nn


class ElasticLinear(nn.Linear):
    """An nn.Linear of the largest size whose forward may use fewer outputs or inputs."""

    def sliced(self, out_features: int | None = None, in_features: int | None = None) -> tuple[Tensor, Tensor]:
        """(weight, bias) restricted to the leading `out_features` rows, `in_features` columns."""
        out_features = out_features or self.out_features
        in_features = in_features or self.in_features
        return self.weight[:out_features, :in_features], self.bias[:out_features]

    def forward(self, x: Tensor, out_features: int | None = None) -> Tensor:
        """Shape: x (..., in) where `in` may be smaller than in_features -> (..., out_features)."""
        return nn.functional.linear(x, *self.sliced(out_features, x.shape[-1]))

    def extract(self, out_features: int | None = None, in_features: int | None = None) -> nn.Linear:
        """A plain nn.Linear holding a copy of the slice."""
        weight, bias = self.sliced(out_features, in_features)
        linear = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        linear.weight.data.copy_(weight)
        linear.bias.data.copy_(bias)
        return linear
