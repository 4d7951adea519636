"""The contract every attention op implements, and the self-attention layer around it.

An op is an `AttentionCore`: it maps per-head queries, keys and values to per-head outputs.
The Q/K/V/O projections live outside the core so that the supernet can share (and slice) them
across attention types; only type-specific extras (Linformer's E/F, Synthesizer's matrices,
random features) are core parameters.

A core built with `causal=True` lets position i see only positions <= i, and has a step form
for decoding one token at a time: `init_state` gives a tuple of fixed-shape tensors (a KV cache,
a ring buffer, prefix sums, a recurrent state), `step` maps the token's q/k/v and the state to
its output and the next state, with the position as a tensor, so that `torch.export` traces one
program for every position. An op without a causal form says why in `causal_refusal`.

# b batch, h heads, n sequence, d head dim
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from nas.errors import ConfigError, build_config


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """For ops without options."""


class AttentionCore(nn.Module):
    """Per-head attention: (b, h, n, d) q/k/v and a (b, n) key mask -> (b, h, n, d); an input
    made from mixed rows (`projection_inputs`) has those rows in place of n.

    Subclasses set `Config` (a frozen dataclass of the op's options), `inputs` (the projections
    the op reads; e.g. LSH shares one projection for queries and keys) and `per_head` (names of
    parameters or buffers whose leading dim indexes heads, so that a subnet with fewer heads
    slices them and sorting heads permutes them; dotted for a submodule's, e.g. "filter.out").
    Both are fixed per class: an op whose inputs depend on its options (synthesizer) is one
    class per variant.

    `revision` counts changes to what the op computes from the same weights: bump it (and say
    what changed beside it) when a checkpoint, an export or a cached standalone result of the
    op made before the change would now give other outputs (`nas.ops.attention.revisions`).

    `causal=True` builds the causal form (position i sees positions <= i); an op that has none
    sets `causal_refusal` to the reason, and building it causal is one ConfigError line.
    """

    name: ClassVar[str]  # set by the registry
    revision: ClassVar[int] = 1
    Config: ClassVar[type] = NoOptions
    inputs: ClassVar[tuple[str, ...]] = ("q", "k", "v")
    per_head: ClassVar[tuple[str, ...]] = ()
    causal_refusal: ClassVar[str] = ""  # why the op has no causal form; empty: it has one

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__()
        if causal and self.causal_refusal:
            raise ConfigError(f"attention '{self.name}' has no causal form: {self.causal_refusal}")
        self.head_dim = head_dim
        self.max_heads = max_heads  # per-head parameters are allocated for this many heads
        self.max_len = max_len
        self.config = config if config is not None else self.Config()
        self.causal = causal  # position i sees only positions <= i; `step` decodes

    @classmethod
    def make_config(cls, **options):
        """The op's Config from keyword options; unknown names or bad values give one clear line."""
        return build_config(cls.Config, options, f"attention '{cls.name}'")

    def forward(self, q: Tensor | None, k: Tensor | None, v: Tensor | None, mask: Tensor | None = None) -> Tensor:
        """Inputs not named in `inputs` are passed as None. mask: (b, n), True = real token."""
        raise NotImplementedError

    def projection_inputs(self, x: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        """(b, n, D) x -> what each projection in `inputs` reads: x itself, by default.

        An op that mixes tokens linearly before attending (Linformer's E X W = (E X) W) mixes
        here, so that its projections run over the few mixed rows instead of all n.
        """
        return dict.fromkeys(self.inputs, x)

    def mixed_rows(self, n: int) -> dict[str, int]:
        """For each input whose projection reads rows mixed from the tokens (`projection_inputs`)
        rather than x: how many rows. The cost model counts the mix as a dense (rows, n) product."""
        return {}

    def flops(self, n: int, heads: int) -> int:
        """Forward floating-point operations of the core for one sequence of length n."""
        raise NotImplementedError

    def activation_elements(self, n: int, heads: int) -> int:
        """Elements the core keeps for backward for one sequence (an estimate)."""
        raise NotImplementedError

    def init_state(
        self, batch: int, heads: int, length: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, ...]:
        """The step state before the first token, for contexts of up to `length` tokens: a tuple of
        tensors, each batch-first, whose shapes never change while decoding. `state_elements`
        gives its size per sequence."""
        raise NotImplementedError

    def step(
        self, q: Tensor | None, k: Tensor | None, v: Tensor | None, state: tuple[Tensor, ...], position: Tensor
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The causal form at one position: equal to row `position` of `forward` on the sequence so far.

        Args:
            q, k, v: (b, h, 1, d) projections of the token at `position` (None where not in `inputs`).
            state: what `init_state` or the previous step returned (positions 0..position-1).
            position: 0-dim long tensor, the same for the whole batch, below the state's length.
        Returns:
            (b, h, 1, d) output, and the state holding positions 0..position.
        """
        raise NotImplementedError

    def state_elements(self, n: int, heads: int) -> int:
        """Elements of the step state of one sequence decoding contexts of up to n tokens (the
        tensors of `init_state(1, heads, n)`)."""
        raise NotImplementedError

    def step_flops(self, n: int, heads: int) -> int:
        """Floating-point operations of the core's `step` for the n-th token (n - 1 before it),
        matrix products only, as `flops` counts them."""
        raise NotImplementedError

    def check_causal(self) -> None:
        """One line unless the core was built causal (only a causal core decodes step by step)."""
        if not self.causal:
            raise ConfigError(f"attention '{self.name}' steps only in its causal form (build it with causal=True)")

    def num_params(self, heads: int) -> int:
        """Parameters the core holds when `heads` heads are active."""
        total = 0
        for name, p in self.named_parameters():
            total += p.numel() // self.max_heads * heads if name in self.per_head else p.numel()
        return total

    def extract(self, heads: int) -> AttentionCore:
        """A standalone copy for `heads` heads, holding only those heads' parameters."""
        if not 1 <= heads <= self.max_heads:
            raise ConfigError(f"heads must be in 1..{self.max_heads}, got {heads}")
        sub = copy.deepcopy(self)
        sub.max_heads = heads
        for name in self.per_head:
            owner, _, attr = name.rpartition(".")
            module = sub.get_submodule(owner)
            tensor = getattr(module, attr)
            kept = tensor.detach()[:heads].clone()  # a buffer stays a buffer
            setattr(module, attr, nn.Parameter(kept) if isinstance(tensor, nn.Parameter) else kept)
        return sub

    def head_tensor(self, name: str) -> Tensor:
        """The per-head parameter or buffer `name` (one of `per_head`, dotted for a submodule's)."""
        owner, _, attr = name.rpartition(".")
        return getattr(self.get_submodule(owner), attr)


def check_length(n: int, max_len: int) -> None:
    if n > max_len:
        raise ConfigError(
            f"sequence length {n} exceeds the model's max_len {max_len}; raise max_len or truncate the data explicitly"
        )


def causal_bias(n: int, mask: Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(b, n) bool key mask or None -> additive bias (b or 1, 1, n, n): 0 where query i may see
    key j (j <= i and j real), the dtype's finite minimum elsewhere (see `key_bias`)."""
    ahead = torch.ones(n, n, dtype=torch.bool, device=device).triu(1)  # (n, n): j > i
    hidden = ahead[None, None] if mask is None else ahead[None, None] | ~mask[:, None, None, :]
    return torch.zeros(hidden.shape, dtype=dtype, device=device).masked_fill_(hidden, torch.finfo(dtype).min)


def slots_upto(position: Tensor, length: int) -> Tensor:
    """(length,) bool: the cache slots 0..position, the ones a causal step may read."""
    return torch.arange(length, device=position.device) <= position


def write_slot(cache: Tensor, x: Tensor, slot: Tensor) -> Tensor:
    """`cache` (b, h, L, ...) with x (b, h, 1, ...) written at `slot` (0-dim long tensor, below L),
    out of place: the state goes in and out as tensors, and torch.export sees no mutation."""
    return cache.index_copy(2, slot.view(1), x)


def split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)  # (b, h, n, d)


def merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)  # (b, n, h*d)


def key_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(b, n) bool mask -> (b, 1, 1, n) additive bias: 0 for real keys, the dtype's min else.

    A finite minimum (not -inf) keeps rows whose keys are all padding finite instead of NaN.
    """
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def attend(
    x: Tensor,
    mask: Tensor | None,
    core: AttentionCore,
    heads: int,
    project: Mapping[str, Callable[[Tensor], Tensor]],
    out: Callable[[Tensor], Tensor],
) -> Tensor:
    """Project x for each input the core reads, run the core, project back.

    Shared by the standalone layer (its nn.Linear modules, which dynamic quantization can
    swap) and the supernet (its shared weights, sliced to the arch's heads).
    Shape: x (b, n, D) -> (b, n, D).
    """
    check_length(x.shape[1], core.max_len)
    inputs = core.projection_inputs(x, mask)
    qkv = {name: split_heads(project[name](inputs[name]), heads) for name in core.inputs}  # (b, h, n or rows, d)
    y = core(qkv.get("q"), qkv.get("k"), qkv.get("v"), mask)  # (b, h, n, d)
    return out(merge_heads(y))


def attend_step(
    x: Tensor,
    state: tuple[Tensor, ...],
    position: Tensor,
    core: AttentionCore,
    heads: int,
    project: Mapping[str, Callable[[Tensor], Tensor]],
    out: Callable[[Tensor], Tensor],
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """`attend` for the one token at `position` of a causal core, and the core's next state.

    Shape: x (b, 1, D) -> (b, 1, D).
    """
    core.check_causal()
    qkv = {name: split_heads(project[name](x), heads) for name in core.inputs}  # (b, h, 1, d)
    y, state = core.step(qkv.get("q"), qkv.get("k"), qkv.get("v"), state, position)  # (b, h, 1, d)
    return out(merge_heads(y)), state


class SelfAttention(nn.Module):
    """A self-attention layer: projections for the inputs the core reads, the core, an output."""

    def __init__(self, dim: int, heads: int, head_dim: int, core: AttentionCore):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.proj = nn.ModuleDict({name: nn.Linear(dim, inner) for name in core.inputs})
        self.out = nn.Linear(inner, dim)
        self.core = core

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Shape: x (b, n, D), mask (b, n) bool with True = real token -> (b, n, D)."""
        return attend(x, mask, self.core, self.heads, self.proj, self.out)

    def init_state(self, batch: int, length: int, device=None, dtype=None) -> tuple[Tensor, ...]:
        """The core's step state for `batch` sequences of up to `length` tokens."""
        return self.core.init_state(batch, self.heads, length, device, dtype)

    def step(self, x: Tensor, state: tuple[Tensor, ...], position: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Shape: x (b, 1, D), the token at `position` (0-dim long) -> (b, 1, D), and the next state."""
        return attend_step(x, state, position, self.core, self.heads, self.proj, self.out)
