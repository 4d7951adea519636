"""The standalone Transformer for one architecture (what extract, retrain and export use).

Pre-norm encoder: token + learned position embeddings, `depth` blocks of
x + attention(norm(x)) and x + ffn(norm(x)), a final norm and a readout head.
# b batch, n sequence, D model width, C classes
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from nas.errors import ConfigError
from nas.ops.attention import SelfAttention, make_core
from nas.ops.attention.base import check_length
from nas.space import Arch, LayerArch, SearchSpace

HEADS = ("classify", "tokens")


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        check_length(tokens.shape[1], self.max_len)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.tokens(tokens) + self.positions(positions)  # (b, n, D)


class Readout(nn.Module):
    """`classify`: mean over real tokens, then a linear layer; `tokens`: a linear layer per position."""

    def __init__(self, dim: int, num_classes: int, head: str):
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"unknown head '{head}'; allowed: {', '.join(HEADS)}")
        self.head = head
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.norm(x)  # (b, n, D)
        if self.head == "tokens":
            return self.linear(x)  # (b, n, C)
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            weights = mask.to(x.dtype).unsqueeze(-1)  # (b, n, 1)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return self.linear(pooled)  # (b, C)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, attn: SelfAttention, ffn: FeedForward):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = ffn

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.ffn(self.norm2(x))


def make_block(layer: LayerArch, space: SearchSpace, max_len: int) -> Block:
    choice = space.attention[layer.attention]
    core = make_core(choice.type, space.head_dim, layer.heads, max_len, **choice.options)
    attn = SelfAttention(space.dim, layer.heads, space.head_dim, core)
    return Block(space.dim, attn, FeedForward(space.dim, layer.ffn_dim))


class Subnet(nn.Module):
    """A plain Transformer for `arch`, with the widths and attention options of `space`.

    Args:
        arch: the architecture; must lie in `space`.
        space: gives the model width, head width and each attention candidate's op and options.
        vocab_size: input tokens (0 is padding).
        num_classes: outputs per sequence (`classify`) or per position (`tokens`).
        max_len: the longest sequence the model accepts.
        head: "classify" or "tokens".

    Shape: tokens (b, n) long, mask (b, n) bool (True = real) -> (b, C) or (b, n, C).
    """

    def __init__(self, arch: Arch, space: SearchSpace, vocab_size: int, num_classes: int,
                 max_len: int, head: str = "classify"):
        super().__init__()
        space.validate(arch)
        self.arch = arch
        self.embed = TokenEmbedding(vocab_size, space.dim, max_len)
        self.blocks = nn.ModuleList(make_block(layer, space, max_len) for layer in arch.layers)
        self.readout = Readout(space.dim, num_classes, head)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.readout(x, mask)
