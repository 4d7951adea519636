"""The standalone Transformer for one architecture (what extract, retrain and export use);
`ModelShape`, the task's sizes every model, cost and checkpoint is built from; and `ModelSpec`,
the one object (arch, space, shape) that names a model wherever it travels.

Pre-norm encoder (Xiong et al. 2020, https://arxiv.org/abs/2002.04745): token + learned
position embeddings, `depth` blocks of x + attention(norm(x)) and x + ffn(norm(x)), a final
norm and a readout. With the space's `memory.reversible` the blocks are reversible (Reformer,
https://arxiv.org/abs/2001.04451): the embedding is duplicated into a pair (x1, x2), each block
maps it to y1 = x1 + attention(norm(x2)), y2 = x2 + ffn(norm(y1)), and the readout gets the
mean of the pair (as reformer-pytorch does; the Reformer paper concatenates the pair).
A causal shape builds every op's causal form, and such a model of token ids decodes token by
token from a fixed-shape state (`Subnet.init_state`, `Subnet.step`).
# b batch, n sequence, D model width, C classes
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

import torch
from torch import Tensor, nn

from nas.errors import ConfigError, excerpt
from nas.ops.attention import ATTENTION, SelfAttention, make_core
from nas.ops.attention.base import check_length
from nas.ops.chunked import chunked
from nas.ops.reversible import Coupling, coupled, reversible
from nas.space import Arch, LayerArch, SearchSpace

# a label per sequence (mean-pooled), one per position, or a label per pair of sequences (each
# encoded alone by the same model, LRA Retrieval's dual encoder)
READOUTS = ("classify", "tokens", "pair", "forecast")  # forecast: the next steps of each channel
INPUTS = ("ids", "values")  # token ids (b, n), or real values (b, n, channels): a time series


@dataclass(frozen=True)
class ModelShape:
    """What besides the arch and the space decides a model: the task's sizes.

    A task returns it (`task.shape`); `Subnet`, `Supernet` and the cost model take it;
    checkpoints, hparams and an export's model.json store `to_dict()` and read it back with
    `from_dict`.
    """

    vocab_size: int  # input token ids are 0..vocab_size-1; 0 is padding
    num_classes: int  # outputs per sequence ("classify"), per position ("tokens") or per pair ("pair")
    max_len: int  # the longest sequence the model accepts (learned positions)
    readout: str = "classify"  # one of READOUTS
    causal: bool = False  # each position sees only itself and the past (language models)
    input: str = "ids"  # one of INPUTS; "values" goes with readout "forecast" (num_classes: the horizon)
    channels: int = 1  # "values": the series' channels, each a sequence of its own (channel independence)
    patch_len: int = 16  # "values": steps per patch; the blocks' positions are patches (PatchTST)
    patch_stride: int = 8  # "values": steps from one patch's start to the next one's

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_classes", "max_len", "channels", "patch_len", "patch_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {excerpt(value)}")
        if not isinstance(self.causal, bool):
            raise ConfigError(f"causal must be true or false, got {excerpt(self.causal)}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout: unknown readout '{self.readout}'; allowed: {', '.join(READOUTS)}")
        if self.input not in INPUTS:
            raise ConfigError(f"input: unknown input '{self.input}'; allowed: {', '.join(INPUTS)}")
        if (self.input == "values") != (self.readout == "forecast"):
            raise ConfigError(f"input '{self.input}' with readout '{self.readout}': values go with forecast only")
        if self.input == "values" and self.patch_len > self.max_len:
            raise ConfigError(f"patch_len {self.patch_len} is longer than the input's {self.max_len} steps")

    @property
    def sequences(self) -> int:
        """Sequences the encoder runs per example: 2 for a pair, one per channel of values, else 1."""
        return 2 if self.readout == "pair" else self.channels if self.input == "values" else 1

    def positions(self, length: int | None = None) -> int:
        """The positions the blocks see for an input of `length` steps (default max_len): one per
        token, or for values one per patch, the series padded at the end with its last value
        repeated patch_stride times (PatchTST's padding), so the last steps get a patch too."""
        length = self.max_len if length is None else length
        if self.input == "ids":
            return length
        return (length - self.patch_len) // self.patch_stride + 2

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
        check_causal(self.space, self.shape)

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


def check_causal(space: SearchSpace, shape: ModelShape) -> None:
    """One line if the shape is causal and a candidate of the space has no causal form."""
    if not shape.causal:
        return
    for cand, choice in space.attention.items():
        reason = ATTENTION.get(choice.type).causal_refusal
        if reason:
            raise ConfigError(
                f"space '{space.name}': attention '{cand}' ({choice.type}) has no causal form, so a causal task "
                f"cannot search it: {reason}"
            )


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


class ValueEmbedding(nn.Module):
    """Real-valued steps as PatchTST's patches (Nie et al. 2023, https://arxiv.org/abs/2211.14730).

    Each channel is a series of its own (channel independence: `ForecastReadout.fold` makes the
    (b, L, C) input b*C series), scaled by its window's mean and standard deviation (RevIN, Kim
    et al. 2022, https://openreview.net/forum?id=cGDAkQo1C0p, without its affine weights, as
    PatchTST by default), padded at the end with its last value repeated patch_stride times,
    and cut into patches of patch_len steps every patch_stride steps; each patch is one position:
    a linear map of its steps plus a learned position. Patches rather than one position per
    step: a single number is too little for attention to match on, a patch carries the local
    shape of the series, and L=336 steps become 42 positions, which is what lets a search at
    the protocol's lookback run on a CPU (PatchTST's ablations: patching and channel
    independence each lower ETT's MSE).
    """

    def __init__(self, dim: int, shape: ModelShape):
        super().__init__()
        self.max_len, self.patch_len, self.stride = shape.max_len, shape.patch_len, shape.patch_stride
        self.patch = nn.Linear(shape.patch_len, dim)
        self.positions = nn.Embedding(shape.positions(), dim)

    def forward(self, series: Tensor) -> Tensor:
        if series.shape[-1] != self.max_len:  # the forecast head reads exactly max_len steps' patches
            raise ConfigError(f"a forecaster takes windows of exactly {self.max_len} steps, got {series.shape[-1]}")
        mean, std = window_stats(series)
        x = (series - mean) / std  # (b*C, L)
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride)], dim=1)  # (b*C, L + stride)
        patches = x.unfold(1, self.patch_len, self.stride)  # (b*C, P, patch_len)
        positions = torch.arange(patches.shape[1], device=series.device)
        return self.patch(patches) + self.positions(positions)  # (b*C, P, D)


def window_stats(series: Tensor) -> tuple[Tensor, Tensor]:
    """Each series' mean and standard deviation over its steps (RevIN's, eps 1e-5 as PatchTST's).

    Shape: series (s, L) -> mean (s, 1), std (s, 1).
    """
    mean = series.mean(dim=1, keepdim=True)
    std = torch.sqrt(series.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
    return mean, std


class Readout(nn.Module):
    """`classify`: mean over real tokens, then a linear layer; `tokens`: a linear layer per position;
    `pair`: each of the two sequences mean-pooled alone (u, v), then LRA Retrieval's dual-encoder
    head (Tay et al. 2021, https://arxiv.org/abs/2011.04006; its code's classifier_head_dual with
    interaction "NLI"): [u, v, u*v, u-v] -> D -> D/2 -> C with ReLUs, D the model width where
    LRA has its mlp_dim.

    A pair model takes tokens (b, 2, n); `fold` makes them the (2b, n) batch the blocks run on,
    so the two documents never attend to each other.
    """

    def __init__(self, dim: int, num_classes: int, readout: str):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"readout: unknown readout '{readout}'; allowed: {', '.join(READOUTS)}")
        self.kind = readout
        self.norm = nn.LayerNorm(dim)
        if readout == "pair":
            hidden = pair_hidden(dim)
            self.pair = nn.Sequential(nn.Linear(4 * dim, dim), nn.ReLU(), nn.Linear(dim, hidden), nn.ReLU())
            self.linear = nn.Linear(hidden, num_classes)
        else:
            self.linear = nn.Linear(dim, num_classes)

    def fold(self, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The input as a batch of sequences: a pair model's tokens and mask (b, 2, n) become
        (2b, n), pair i in rows 2i and 2i+1; other readouts take (b, n) as it is."""
        if self.kind != "pair":
            return tokens, mask
        if tokens.dim() != 3 or tokens.shape[1] != 2:
            raise ConfigError(f"a pair model takes tokens of shape (batch, 2, length), got {tuple(tokens.shape)}")
        n = tokens.shape[-1]
        return tokens.reshape(-1, n), None if mask is None else mask.reshape(-1, n)  # (2b, n)

    def forward(self, x: Tensor, mask: Tensor | None, series: Tensor | None = None) -> Tensor:
        """series: the folded input, which a forecast's readout takes; unused here."""
        x = self.norm(x)  # (b, n, D)
        if self.kind == "tokens":
            return self.linear(x)  # (b, n, C)
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            weights = mask.to(x.dtype).unsqueeze(-1)  # (b, n, 1)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        if self.kind == "pair":
            u, v = pooled.view(-1, 2, pooled.shape[-1]).unbind(1)  # (b/2, D) each: the two documents
            pooled = self.pair(torch.cat([u, v, u * v, u - v], dim=-1))  # (b/2, D/2)
        return self.linear(pooled)  # (b, C), or (b/2, C) for pairs


def pair_hidden(dim: int) -> int:
    """The width of the pair head's second layer (LRA: mlp_dim // 2)."""
    return max(1, dim // 2)


def readout_params(dim: int, num_classes: int, readout: str) -> int:
    """Parameters of `Readout(dim, num_classes, readout)`: its norm, any pair head, its linear layer."""
    if readout != "pair":
        return 2 * dim + dim * num_classes + num_classes
    hidden = pair_hidden(dim)
    return 2 * dim + (4 * dim * dim + dim) + (dim * hidden + hidden) + (hidden * num_classes + num_classes)


def input_shape(readout: str, batch: int, n: int) -> tuple[int, ...]:
    """The shape of the tokens (and mask) a model with `readout` takes: (b, 2, n) for pairs, else (b, n)."""
    return (batch, 2, n) if readout == "pair" else (batch, n)


class ForecastReadout(nn.Module):
    """The next `num_classes` steps of every channel from its patches: PatchTST's flatten head
    (all P*D features of a channel, after the final norm, through one linear layer to the
    horizon), shared by the channels (channel independence: no channel sees another), then
    scaled back by the window's statistics (`ValueEmbedding`). The loss is the MSE (`task_loss`).
    """

    def __init__(self, dim: int, shape: ModelShape):
        super().__init__()
        self.channels, self.horizon = shape.channels, shape.num_classes
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(shape.positions() * dim, shape.num_classes)

    def fold(self, values: Tensor, mask: Tensor | None) -> tuple[Tensor, None]:
        """Windows (b, L, C) -> the b*C series of one channel each (b*C, L), channel c of window i
        in row i*C + c; the mask goes (a window is never padded, and the blocks see patches)."""
        if values.dim() != 3 or values.shape[-1] != self.channels:
            raise ConfigError(
                f"a forecaster takes values of shape (batch, steps, {self.channels}), got {tuple(values.shape)}"
            )
        return values.transpose(1, 2).reshape(-1, values.shape[1]), None  # (b*C, L)

    def forward(self, x: Tensor, mask: Tensor | None, series: Tensor) -> Tensor:
        """x (b*C, P, D) and the folded input series (b*C, L) -> forecasts (b, H, C)."""
        y = self.linear(self.norm(x).flatten(1))  # (b*C, H), in the window's scale
        mean, std = window_stats(series)
        y = y * std + mean  # (b*C, H)
        return y.reshape(-1, self.channels, self.horizon).transpose(1, 2)  # (b, H, C)


def forecast_params(dim: int, shape: ModelShape) -> tuple[int, int]:
    """Parameters of `ValueEmbedding` and `ForecastReadout` for `shape`."""
    positions = shape.positions()
    embedding = shape.patch_len * dim + dim + positions * dim
    return embedding, 2 * dim + positions * dim * shape.num_classes + shape.num_classes


def make_embedding(dim: int, shape: ModelShape) -> nn.Module:
    """The input layer a shape takes: `TokenEmbedding` for ids, `ValueEmbedding` for values."""
    if shape.input == "values":
        return ValueEmbedding(dim, shape)
    return TokenEmbedding(shape.vocab_size, dim, shape.max_len)


def make_readout(dim: int, shape: ModelShape) -> nn.Module:
    """The readout a shape takes: `ForecastReadout` for forecasts, else `Readout`."""
    if shape.readout == "forecast":
        return ForecastReadout(dim, shape)
    return Readout(dim, shape.num_classes, shape.readout)


def random_input(shape: ModelShape, batch: int, length: int | None = None) -> Tensor:
    """An input of `length` steps (default max_len): token ids 1..vocab_size-1 (`input_shape`),
    or standard normal values (b, length, channels)."""
    length = shape.max_len if length is None else length
    if shape.input == "values":
        return torch.randn(batch, length, shape.channels)
    return torch.randint(1, max(2, shape.vocab_size), input_shape(shape.readout, batch, length))


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

    def step(self, x: Tensor, state: tuple[Tensor, ...], position: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """`forward` at one position of a causal model. Shape: x (b, 1, D) -> (b, 1, D), and the
        attention's next state."""
        y, state = self.attn.step(self.norm1(x), state, position)
        x = x + y
        return x + self.feed(x), state

    def step_pair(
        self, x1: Tensor, x2: Tensor, state: tuple[Tensor, ...], position: Tensor
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """The reversible coupling at one position: y1 = x1 + attention(x2), y2 = x2 + ffn(y1).
        Shape: x1, x2 (b, 1, D) -> y1, y2 (b, 1, D), and the attention's next state."""
        y, state = self.attn.step(self.norm1(x2), state, position)
        x1 = x1 + y
        return x1, x2 + self.feed(x1), state


def make_block(layer: LayerArch, space: SearchSpace, max_len: int, causal: bool = False) -> Block:
    choice = space.attention[layer.attention]
    core = make_core(choice.type, space.head_dim, layer.heads, max_len, causal, **choice.options)
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

    Shape: tokens (b, n) long, mask (b, n) bool (True = real) -> (b, C) or (b, n, C); a pair
    readout takes tokens and mask (b, 2, n) -> (b, C); a forecaster values (b, max_len, channels)
    float, its mask unused -> (b, horizon, channels).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        arch, space, shape = spec.arch, spec.space, spec.shape
        self.reversible = space.memory.reversible
        self.recompute = True  # reversible only: False stores activations (tests' reference)
        self.embed = make_embedding(space.dim, shape)
        self.blocks = nn.ModuleList(make_block(layer, space, shape.positions(), shape.causal) for layer in arch.layers)
        self.readout = make_readout(space.dim, shape)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        tokens, mask = self.readout.fold(tokens, mask)  # a pair's documents, a forecast's channels: rows
        x = self.embed(tokens)
        if self.reversible:
            x = run_blocks(x, [block.coupling(mask) for block in self.blocks], self.training, self.recompute)
        else:
            for block in self.blocks:
                x = block(x, mask)
        return self.readout(x, mask, tokens)

    def init_state(self, batch: int, length: int | None = None) -> tuple[tuple[Tensor, ...], ...]:
        """The decoding state before the first token of `batch` sequences of up to `length` tokens
        (default max_len): per layer, a tuple of tensors whose shapes never change (`step`)."""
        self._check_decodes()
        length = self.spec.shape.max_len if length is None else length
        check_length(length, self.spec.shape.max_len)
        p = next(self.parameters())
        return tuple(block.attn.init_state(batch, length, p.device, p.dtype) for block in self.blocks)

    def step(
        self, tokens: Tensor, state: tuple[tuple[Tensor, ...], ...], position: Tensor | int
    ) -> tuple[Tensor, tuple[tuple[Tensor, ...], ...]]:
        """Incremental decoding of a causal model: the logits at `position`, given the token there
        and the state of the positions before it; equal to `forward`'s at that position.

        Args:
            tokens: (b,) long, each sequence's token at `position`.
            state: what `init_state` or the previous step returned.
            position: 0-dim long tensor (or int), the same for the whole batch, below the state's length.
        Returns:
            (b, C) logits, and the state holding positions 0..position.
        """
        self._check_decodes()
        position = torch.as_tensor(position, device=tokens.device)
        x = (self.embed.tokens(tokens) + self.embed.positions(position))[:, None]  # (b, 1, D)
        new_state = []
        if self.reversible:
            x1 = x2 = x
            for block, layer_state in zip(self.blocks, state):
                x1, x2, layer_state = block.step_pair(x1, x2, layer_state, position)
                new_state.append(layer_state)
            x = (x1 + x2) / 2  # (b, 1, D)
        else:
            for block, layer_state in zip(self.blocks, state):
                x, layer_state = block.step(x, layer_state, position)
                new_state.append(layer_state)
        return self.readout(x, None)[:, 0], tuple(new_state)  # (b, C)

    def _check_decodes(self) -> None:
        """One line unless the model decodes: causal, token ids in, a readout per position."""
        shape = self.spec.shape
        if not shape.causal or shape.input != "ids" or shape.readout != "tokens":
            raise ConfigError(
                "step decoding needs a causal model of token ids with a readout per position (readout tokens); "
                f"this one is {'causal' if shape.causal else 'bidirectional'} with input {shape.input} "
                f"and readout {shape.readout}"
            )
