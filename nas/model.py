"""The standalone Transformer for one architecture (what extract, retrain and export use);
`ModelShape`, the task's sizes every model, cost and checkpoint is built from; and `ModelSpec`,
the one object (arch, space, shape) that names a model wherever it travels.

Pre-norm encoder (Xiong et al. 2020, https://arxiv.org/abs/2002.04745): token + learned
position embeddings, `depth` blocks of x + attention(norm(x)) and x + ffn(norm(x)), a final
norm and a readout. With the space's `memory.reversible` the blocks are reversible (Reformer,
https://arxiv.org/abs/2001.04451): the embedding is duplicated into a pair (x1, x2), each block
maps it to y1 = x1 + attention(norm(x2)), y2 = x2 + ffn(norm(y1)), and the readout gets the
mean of the pair (as reformer-pytorch does; the Reformer paper concatenates the pair).
# b batch, n sequence, D model width, C classes
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

import torch
from torch import Tensor, nn

from nas.errors import ConfigError, excerpt
from nas.ops.attention import SelfAttention, make_core
from nas.ops.attention.base import check_length
from nas.ops.chunked import chunked
from nas.ops.reversible import Coupling, coupled, reversible
from nas.space import Arch, LayerArch, SearchSpace

READOUTS = ("classify", "tokens")  # a label per sequence (mean-pooled), or one per position


@dataclass(frozen=True)
class ModelShape:
    """What besides the arch and the space decides a model: the task's sizes.

    A task returns it (`task.shape`); `Subnet`, `Supernet` and the cost model take it;
    checkpoints, hparams and an export's model.json store `to_dict()` and read it back with
    `from_dict`.
    """

    vocab_size: int  # input token ids are 0..vocab_size-1; 0 is padding
    num_classes: int  # outputs per sequence (readout "classify") or per position ("tokens")
    max_len: int  # the longest sequence the model accepts (learned positions)
    readout: str = "classify"  # one of READOUTS
    causal: bool = False  # each position sees only itself and the past (language models)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_classes", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {excerpt(value)}")
        if not isinstance(self.causal, bool):
            raise ConfigError(f"causal must be true or false, got {excerpt(self.causal)}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout: unknown readout '{self.readout}'; allowed: {', '.join(READOUTS)}")

    def to_dict(self) -> dict:
        """Plain types, as checkpoints (weights_only) and JSON hold them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "shape") -> ModelShape:
        """The shape saved by `to_dict`; a missing or unknown key is a ConfigError naming `source`.
        A field with a default may be missing: shapes saved before it existed mean its default."""
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING]
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of {', '.join(names)}, got {type(data).__name__}")
        unknown = [key for key in data if key not in names]
        missing = [name for name in required if name not in data]
        if unknown or missing:
            what = f"unknown key '{unknown[0]}'" if unknown else f"missing key '{missing[0]}'"
            raise ConfigError(f"{source}: {what}; allowed: {', '.join(names)}")
        return cls(**data)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides a standalone model's structure, as nanoGPT's `GPTConfig`.

    `Subnet`, the cost model, retrain checkpoints, standalone jobs and exports take it, and
    store `to_dict()` (one dict: arch, space, shape) where they keep it. Building one checks
    that the arch lies in the space.
    """

    arch: Arch  # the layers: depth, and each one's attention candidate, heads and FFN width
    space: SearchSpace  # the model width, head width and each candidate's op and options
    shape: ModelShape  # the task's sizes: vocabulary, outputs, longest sequence, readout

    def __post_init__(self) -> None:
        self.space.validate(self.arch)

    @classmethod
    def build(cls, arch: Arch, space: SearchSpace, shape: ModelShape, source: str) -> ModelSpec:
        """`ModelSpec(arch, space, shape)`; an arch outside the space is one ConfigError line naming `source`."""
        try:
            return cls(arch, space, shape)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_dict(self) -> dict:
        """Plain types, as checkpoints (weights_only) and JSON hold them."""
        return {"arch": self.arch.to_dict(), "space": self.space.to_dict(), "shape": self.shape.to_dict()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "model") -> ModelSpec:
        """The spec saved by `to_dict`; any problem is one ConfigError line naming `source`."""
        names = ("arch", "space", "shape")
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of {', '.join(names)}, got {type(data).__name__}")
        unknown = [key for key in data if key not in names]
        missing = [name for name in names if name not in data]
        if unknown or missing:
            what = f"unknown key {excerpt(unknown[0])}" if unknown else f"missing key '{missing[0]}'"
            raise ConfigError(f"{source}: {what}; allowed: {', '.join(names)}")
        return cls.build(
            Arch.from_dict(data["arch"], source=f"{source}: arch"),
            SearchSpace.from_dict(data["space"], source=f"{source}: space"),
            ModelShape.from_dict(data["shape"], source=f"{source}: shape"),
            source,
        )

    @classmethod
    def from_hparams(cls, hparams: dict, source: str) -> ModelSpec:
        """The spec of a retrain checkpoint's hparams: its `model`, or the separate `arch`,
        `space` and `shape` that checkpoints held before there was one."""
        if "model" not in hparams and all(name in hparams for name in ("arch", "space", "shape")):
            return cls.from_dict({name: hparams[name] for name in ("arch", "space", "shape")}, source)
        return cls.from_dict(hparams.get("model"), f"{source}: model")


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

    def __init__(self, dim: int, num_classes: int, readout: str):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"readout: unknown readout '{readout}'; allowed: {', '.join(READOUTS)}")
        self.kind = readout
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.norm(x)  # (b, n, D)
        if self.kind == "tokens":
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
    """ffn_chunks: the feed-forward (and its norm) runs on this many pieces of the sequence."""

    def __init__(self, dim: int, attn: SelfAttention, ffn: FeedForward, ffn_chunks: int = 1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = ffn
        self.ffn_chunks = ffn_chunks

    def attend(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.attn(self.norm1(x), mask)

    def feed(self, x: Tensor) -> Tensor:
        return self.ffn(self.norm2(x))  # position-wise, so it may run in chunks

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attend(x, mask)
        return x + chunked(self.feed, x, self.ffn_chunks, recompute=self.training)

    def coupling(self, mask: Tensor | None) -> Coupling:
        """The block as a reversible layer: f attends, g feeds forward."""
        return Coupling(lambda x: self.attend(x, mask), self.feed, self, self.ffn_chunks)


def make_block(layer: LayerArch, space: SearchSpace, max_len: int) -> Block:
    choice = space.attention[layer.attention]
    core = make_core(choice.type, space.head_dim, layer.heads, max_len, **choice.options)
    attn = SelfAttention(space.dim, layer.heads, space.head_dim, core)
    return Block(space.dim, attn, FeedForward(space.dim, layer.ffn_dim), space.memory.ffn_chunks)


def run_blocks(x: Tensor, couplings: list[Coupling], training: bool, recompute: bool = True) -> Tensor:
    """A reversible stack on the duplicated stream, read out as the mean of the pair.

    recompute: recompute activations in backward (training); False stores them (plain
    autograd through the same coupling: the reference the recomputation must match).
    Shape: x (b, n, D) -> (b, n, D).
    """
    if recompute and training:
        x1, x2 = reversible(x, x, couplings)
    else:
        x1, x2 = coupled(x, x, couplings, recompute=training)
    return (x1 + x2) / 2  # (b, n, D)


class Subnet(nn.Module):
    """A plain Transformer for the spec's arch, with the widths and attention options of its space.

    Args:
        spec: the arch, the space (model width, head width, each attention candidate's op and
            options) and the task's sizes (vocabulary, outputs, longest sequence, readout).

    Shape: tokens (b, n) long, mask (b, n) bool (True = real) -> (b, C) or (b, n, C).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        arch, space, shape = spec.arch, spec.space, spec.shape
        self.reversible = space.memory.reversible
        self.recompute = True  # reversible only: False stores activations (tests' reference)
        self.embed = TokenEmbedding(shape.vocab_size, space.dim, shape.max_len)
        self.blocks = nn.ModuleList(make_block(layer, space, shape.max_len) for layer in arch.layers)
        self.readout = Readout(space.dim, shape.num_classes, shape.readout)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.embed(tokens)
        if self.reversible:
            x = run_blocks(x, [block.coupling(mask) for block in self.blocks], self.training, self.recompute)
        else:
            for block in self.blocks:
                x = block(x, mask)
        return self.readout(x, mask)
