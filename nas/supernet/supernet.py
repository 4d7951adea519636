"""One-shot supernet: every candidate layer of a search space in one set of shared weights.

Widths are entangled by slicing the largest matrices (HAT https://arxiv.org/abs/2005.14187,
AutoFormer https://arxiv.org/abs/2107.00651): heads use the leading `head_dim` slices of
Q/K/V/O, the FFN its leading hidden units, depth the first layers.
# b batch, n sequence, D model width, C classes
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.model import Block, FeedForward, Readout, Subnet, TokenEmbedding
from nas.ops.attention import SelfAttention, make_core
from nas.ops.attention.base import attend
from nas.ops.elastic import ElasticLinear
from nas.space import Arch, LayerArch, SearchSpace

# entangled: all attention candidates share Q/K/V/O; separate: each candidate owns its own.
SHARING = ("entangled", "separate")
SHARED_KEY = "shared"


class SuperAttention(nn.Module):
    def __init__(self, space: SearchSpace, max_len: int, sharing: str):
        super().__init__()
        self.head_dim = space.head_dim
        self.sharing = sharing
        self.cores = nn.ModuleDict({
            cand: make_core(choice.type, space.head_dim, space.max_heads, max_len, **choice.options)
            for cand, choice in space.attention.items()
        })
        inner = space.max_heads * space.head_dim

        def projections(inputs) -> nn.ModuleDict:
            layers = {name: ElasticLinear(space.dim, inner) for name in inputs}
            return nn.ModuleDict({**layers, "out": ElasticLinear(inner, space.dim)})

        if sharing == "entangled":
            used = sorted({name for core in self.cores.values() for name in core.inputs})
            self.projections = nn.ModuleDict({SHARED_KEY: projections(used)})
        else:
            self.projections = nn.ModuleDict({cand: projections(core.inputs)
                                              for cand, core in self.cores.items()})

    def projections_of(self, candidate: str) -> nn.ModuleDict:
        return self.projections[SHARED_KEY if self.sharing == "entangled" else candidate]

    def forward(self, x: Tensor, mask: Tensor | None, layer: LayerArch) -> Tensor:
        core = self.cores[layer.attention]
        proj = self.projections_of(layer.attention)
        inner = layer.heads * self.head_dim
        weights = {name: proj[name].sliced(out_features=inner) for name in core.inputs}
        return attend(x, mask, core, layer.heads, weights, proj["out"].sliced(in_features=inner))

    def extract(self, layer: LayerArch) -> SelfAttention:
        core = self.cores[layer.attention].extract(layer.heads)
        attn = SelfAttention(self.projections_of(layer.attention)["out"].out_features,
                             layer.heads, self.head_dim, core)
        proj = self.projections_of(layer.attention)
        inner = layer.heads * self.head_dim
        for name in core.inputs:
            attn.proj[name] = proj[name].extract(out_features=inner)
        attn.out = proj["out"].extract(in_features=inner)
        return attn


class SuperFeedForward(nn.Module):
    def __init__(self, dim: int, max_hidden: int):
        super().__init__()
        self.fc1 = ElasticLinear(dim, max_hidden)
        self.fc2 = ElasticLinear(max_hidden, dim)

    def forward(self, x: Tensor, hidden: int) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x, out_features=hidden)))

    def extract(self, hidden: int) -> FeedForward:
        ffn = FeedForward(self.fc1.in_features, hidden)
        ffn.fc1 = self.fc1.extract(out_features=hidden)
        ffn.fc2 = self.fc2.extract(in_features=hidden)
        return ffn


class SuperBlock(nn.Module):
    def __init__(self, space: SearchSpace, max_len: int, sharing: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(space.dim)
        self.attn = SuperAttention(space, max_len, sharing)
        self.norm2 = nn.LayerNorm(space.dim)
        self.ffn = SuperFeedForward(space.dim, space.max_ffn_dim)

    def forward(self, x: Tensor, mask: Tensor | None, layer: LayerArch) -> Tensor:
        x = x + self.attn(self.norm1(x), mask, layer)
        return x + self.ffn(self.norm2(x), layer.ffn_dim)

    def extract(self, layer: LayerArch) -> Block:
        block = Block(self.norm1.normalized_shape[0], self.attn.extract(layer), self.ffn.extract(layer.ffn_dim))
        block.norm1.load_state_dict(self.norm1.state_dict())
        block.norm2.load_state_dict(self.norm2.state_dict())
        return block


class Supernet(nn.Module):
    """Shared weights for every architecture of `space`.

    Args:
        space: the search space.
        vocab_size: input tokens (0 is padding).
        num_classes: outputs per sequence (`classify`) or per position (`tokens`).
        max_len: the longest sequence the model accepts.
        head: "classify" or "tokens".
        sharing: "entangled" (attention candidates share Q/K/V/O) or "separate".

    Shape: tokens (b, n) long, mask (b, n) bool (True = real) -> (b, C) or (b, n, C).
    """

    def __init__(self, space: SearchSpace, vocab_size: int, num_classes: int, max_len: int,
                 head: str = "classify", sharing: str = "entangled"):
        super().__init__()
        if sharing not in SHARING:
            raise ConfigError(f"unknown sharing '{sharing}'; allowed: {', '.join(SHARING)}")
        self.space = space
        self.vocab_size, self.num_classes, self.max_len = vocab_size, num_classes, max_len
        self.head, self.sharing = head, sharing
        self.embed = TokenEmbedding(vocab_size, space.dim, max_len)
        self.blocks = nn.ModuleList(SuperBlock(space, max_len, sharing) for _ in range(space.max_depth))
        self.readout = Readout(space.dim, num_classes, head)

    def forward(self, tokens: Tensor, arch: Arch, mask: Tensor | None = None) -> Tensor:
        self.space.validate(arch)
        x = self.embed(tokens)
        for block, layer in zip(self.blocks, arch.layers):
            x = block(x, mask, layer)
        return self.readout(x, mask)

    @torch.no_grad()
    def extract(self, arch: Arch) -> Subnet:
        """A standalone `Subnet` holding copies of exactly the weights `arch` uses."""
        self.space.validate(arch)
        with torch.device("meta"):  # the skeleton's own weights are replaced below
            subnet = Subnet(arch, self.space, self.vocab_size, self.num_classes, self.max_len, self.head)
        subnet.embed = copy.deepcopy(self.embed)
        subnet.readout = copy.deepcopy(self.readout)
        subnet.blocks = nn.ModuleList(block.extract(layer) for block, layer in zip(self.blocks, arch.layers))
        return subnet
