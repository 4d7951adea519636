"""Few-shot NAS: K sub-supernets split on one decision, each a copy of the one-shot supernet
(Zhao et al., ICML 2021, https://arxiv.org/abs/2006.06863).

Archs that differ in the split decision stop sharing weights: an arch trains and is scored only
in the sub-supernet of its choice, so e.g. Performer layers no longer pull exact attention's
Q/K/V in layer 0. Split on `depth` or on a decision of a layer every arch has.
# b batch, n sequence, C classes
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from nas.errors import ConfigError
from nas.model import Subnet
from nas.space import Arch, SearchSpace
from nas.supernet.supernet import Supernet


def split_keys(space: SearchSpace) -> tuple[str, ...]:
    """Decisions a few-shot supernet can split on: those every arch of the space makes."""
    always = min(space.depths)
    keys = [k for k in space.decisions() if k == "depth" or int(k.split(".")[0][len("layer") :]) < always]
    return tuple(k for k in keys if len(space.decisions()[k]) > 1)


class FewShotSupernet(nn.Module):
    """One sub-supernet per choice of `split`, each starting as a copy of `parent`.

    Args:
        parent: the one-shot supernet (trained or fresh) the copies start from; not kept.
        split: a decision key of `split_keys(parent.space)`, e.g. "layer0.attention".

    Shape: as Supernet: tokens (b, n), mask (b, n) -> (b, C) or (b, n, C).
    """

    def __init__(self, parent: Supernet, split: str):
        super().__init__()
        allowed = split_keys(parent.space)
        if split not in allowed:
            raise ConfigError(f"few_shot: cannot split on '{split}'; allowed: {', '.join(allowed)}")
        self.split = split
        self.choices = parent.space.decisions()[split]
        self.subnets = nn.ModuleList(copy.deepcopy(parent) for _ in self.choices)

    # what the search/retrain code reads from a supernet
    space = property(lambda self: self.subnets[0].space)
    sharing = property(lambda self: self.subnets[0].sharing)
    shape = property(lambda self: self.subnets[0].shape)

    def route(self, arch: Arch) -> int:
        """The index of the sub-supernet that trains and scores `arch`."""
        self.space.validate(arch)
        return self.choices.index(self.space.choices_of(arch)[self.split])

    def subnet_of(self, arch: Arch) -> Supernet:
        return self.subnets[self.route(arch)]

    def forward(self, tokens: Tensor, arch: Arch, mask: Tensor | None = None) -> Tensor:
        return self.subnet_of(arch)(tokens, arch, mask)

    def forward_mixed(self, *args, **kwargs) -> Tensor:
        raise ConfigError(
            "few_shot: sub-supernets train by sampling paths; "
            "use a sampling strategy (random, evolution, enas), not darts/gdas"
        )

    def extract(self, arch: Arch) -> Subnet:
        """The standalone subnet of `arch`, from its own sub-supernet."""
        return self.subnet_of(arch).extract(arch)
