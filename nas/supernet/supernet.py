"""One-shot supernet: every candidate layer of a search space in one set of shared weights.

Widths are entangled by slicing the largest matrices (HAT https://arxiv.org/abs/2005.14187,
AutoFormer https://arxiv.org/abs/2107.00651): heads use the leading `head_dim` slices of
Q/K/V/O, the FFN its leading hidden units, depth the first layers.
# b batch, n sequence, D model width, C classes
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor, nn

from nas import cost
from nas.errors import ConfigError
from nas.model import (
    Block,
    FeedForward,
    ModelShape,
    ModelSpec,
    Subnet,
    check_causal,
    make_embedding,
    make_readout,
    run_blocks,
)
from nas.ops.attention import SelfAttention, make_core
from nas.ops.attention.base import attend, merge_heads, split_heads
from nas.ops.chunked import chunked
from nas.ops.elastic import ElasticLinear
from nas.ops.reversible import Coupling
from nas.space import LAYER_FIELDS, Arch, LayerArch, SearchSpace

# entangled: all attention candidates share Q/K/V/O; separate: each candidate owns its own;
# entangled_gain: shared Q/K/V/O plus a private input and output gain (a D-vector each) per
# candidate, so an approximate op can rescale what the shared projections see and give back
# without pulling exact attention's weights; extract() folds the gains into the projections.
SHARING = ("entangled", "separate", "entangled_gain")
SHARED_KEY = "shared"


class SuperAttention(nn.Module):
    def __init__(self, space: SearchSpace, max_len: int, sharing: str, causal: bool = False):
        super().__init__()
        self.head_dim = space.head_dim
        self.sharing = sharing
        self.cores = nn.ModuleDict(
            {
                cand: make_core(choice.type, space.head_dim, space.max_heads, max_len, causal, **choice.options)
                for cand, choice in space.attention.items()
            }
        )
        inner = space.max_heads * space.head_dim

        def projections(inputs) -> nn.ModuleDict:
            layers = {name: ElasticLinear(space.dim, inner) for name in inputs}
            return nn.ModuleDict({**layers, "out": ElasticLinear(inner, space.dim)})

        if sharing != "separate":
            used = sorted({name for core in self.cores.values() for name in core.inputs})
            self.projections = nn.ModuleDict({SHARED_KEY: projections(used)})
        else:
            self.projections = nn.ModuleDict({cand: projections(core.inputs) for cand, core in self.cores.items()})
        if sharing == "entangled_gain":  # row 0 scales the input features, row 1 the output
            self.gains = nn.ParameterDict({cand: nn.Parameter(torch.ones(2, space.dim)) for cand in self.cores})

    def projections_of(self, candidate: str) -> nn.ModuleDict:
        return self.projections[candidate if self.sharing == "separate" else SHARED_KEY]

    def gains_of(self, candidate: str) -> tuple[Tensor, Tensor] | tuple[None, None]:
        """(input gain (D,), output gain (D,)) of a candidate under `entangled_gain`, else Nones."""
        return tuple(self.gains[candidate]) if self.sharing == "entangled_gain" else (None, None)

    def forward(self, x: Tensor, mask: Tensor | None, layer: LayerArch) -> Tensor:
        core = self.cores[layer.attention]
        proj = self.projections_of(layer.attention)
        inner = layer.heads * self.head_dim
        project = {name: functools.partial(proj[name], out_features=inner) for name in core.inputs}
        gain_in, gain_out = self.gains_of(layer.attention)
        if gain_in is not None:
            x = x * gain_in  # (b, n, D)
        y = attend(x, mask, core, layer.heads, project, proj["out"])  # out: in_features from x
        return y if gain_out is None else y * gain_out  # (b, n, D)

    def forward_mixed(
        self,
        x: Tensor,
        mask: Tensor | None,
        attention_w: Tensor,
        heads_w: Tensor,
        heads_choices: tuple[int, ...],
        partial: int = 1,
    ) -> Tensor:
        """Softmax-weighted mixture over candidates and head counts (DARTS, FBNetV2).

        Every candidate runs once; a head count is a mask over heads, so the head mixture is
        one mask weighted by `heads_w`. Projections shared by candidates run once.
        partial = K > 1 (PC-DARTS https://arxiv.org/abs/1907.05737): the candidates attend on
        the leading max_heads / K heads only; the other heads bypass the mixed op (their value
        projection passes through unchanged), so the mixture costs about 1/K of the attention.
        A candidate of weight exactly 0 (dropped by progressive shrinking) is not run: its
        term and its gradient would be 0.
        """
        max_heads = self.cores[next(iter(self.cores))].max_heads
        if partial < 1 or max_heads % partial:
            raise ConfigError(f"partial={partial} must be >= 1 and divide the largest head count {max_heads}")
        mixed_heads = max_heads // partial  # the heads the candidates see
        head_index = torch.arange(max_heads, device=x.device)
        choice_masks = torch.stack([(head_index < h).to(x.dtype) for h in heads_choices])  # (H_c, h)
        head_mask = (heads_w[:, None] * choice_masks).sum(0)[None, :, None, None]  # (1, h, 1, 1)
        projected: dict[tuple[str, str], Tensor] = {}
        out = 0
        for (cand, core), w in zip(self.cores.items(), attention_w):
            if w == 0:  # a dropped candidate (progressive shrinking): adds nothing
                continue
            proj = self.projections_of(cand)
            gain_in, gain_out = self.gains_of(cand)
            key = cand if self.sharing != "entangled" else SHARED_KEY  # who may reuse a projection
            seen = x if gain_in is None else x * gain_in  # (b, n, D)

            def project(name: str, rows: Tensor) -> Tensor:  # (b, h or h/K, n or rows, d)
                # Only the values of every token feed the bypass; the rest is read by the
                # candidates, on their h/K heads, so only those heads are projected.
                heads = max_heads if name == "v" and rows is seen else mixed_heads
                if rows is not seen:  # mixed from the tokens by this candidate (Linformer): its own
                    return split_heads(proj[name](rows, out_features=heads * self.head_dim), heads)
                if (key, name) not in projected:
                    projected[key, name] = split_heads(proj[name](seen, out_features=heads * self.head_dim), heads)
                return projected[key, name]

            inputs = core.projection_inputs(seen, mask)
            qkv = (
                project(name, inputs[name])[:, :mixed_heads] if name in core.inputs else None
                for name in ("q", "k", "v")
            )
            y = core(*qkv, mask)  # (b, h/K, n, d)
            if partial > 1:  # the bypassed heads: their values (of every token), unmixed
                y = torch.cat([y, project("v", seen)[:, mixed_heads:]], 1)  # (b, h, n, d)
            y = proj["out"](merge_heads(y * head_mask))  # (b, n, D)
            out = out + w * (y if gain_out is None else y * gain_out)
        return out

    def extract(self, layer: LayerArch) -> SelfAttention:
        core = self.cores[layer.attention].extract(layer.heads)
        attn = SelfAttention(self.projections_of(layer.attention)["out"].out_features, layer.heads, self.head_dim, core)
        proj = self.projections_of(layer.attention)
        inner = layer.heads * self.head_dim
        gain_in, gain_out = self.gains_of(layer.attention)
        for name in core.inputs:
            attn.proj[name] = proj[name].extract(out_features=inner)
        attn.out = proj["out"].extract(in_features=inner)
        if gain_in is not None:  # W (g * x) = (W diag g) x; g * (W y + b) = (diag g W) y + g b
            with torch.no_grad():
                for name in core.inputs:
                    attn.proj[name].weight.mul_(gain_in[None, :])
                attn.out.weight.mul_(gain_out[:, None])
                attn.out.bias.mul_(gain_out)
        return attn


class SuperFeedForward(nn.Module):
    def __init__(self, dim: int, max_hidden: int):
        super().__init__()
        self.fc1 = ElasticLinear(dim, max_hidden)
        self.fc2 = ElasticLinear(max_hidden, dim)

    def forward(self, x: Tensor, hidden: int) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x, out_features=hidden)))

    def forward_mixed(self, x: Tensor, hidden_w: Tensor, hidden_choices: tuple[int, ...]) -> Tensor:
        """The widest weighted layer once (widths of weight 0 add nothing), its hidden units
        masked by the weighted width choices."""
        widest = max((h for h, w in zip(hidden_choices, hidden_w) if w != 0), default=self.fc1.out_features)
        units = torch.arange(widest, device=x.device)
        masks = torch.stack([(units < h).to(x.dtype) for h in hidden_choices])  # (F_c, F)
        return self.fc2(nn.functional.gelu(self.fc1(x, out_features=widest)) * (hidden_w[:, None] * masks).sum(0))

    def extract(self, hidden: int) -> FeedForward:
        ffn = FeedForward(self.fc1.in_features, hidden)
        ffn.fc1 = self.fc1.extract(out_features=hidden)
        ffn.fc2 = self.fc2.extract(in_features=hidden)
        return ffn


class SuperBlock(nn.Module):
    def __init__(self, space: SearchSpace, max_len: int, sharing: str, causal: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(space.dim)
        self.attn = SuperAttention(space, max_len, sharing, causal)
        self.norm2 = nn.LayerNorm(space.dim)
        self.ffn = SuperFeedForward(space.dim, space.max_ffn_dim)
        self.ffn_chunks = space.memory.ffn_chunks

    def attend(self, x: Tensor, mask: Tensor | None, layer: LayerArch) -> Tensor:
        return self.attn(self.norm1(x), mask, layer)

    def feed(self, x: Tensor, layer: LayerArch) -> Tensor:
        return self.ffn(self.norm2(x), layer.ffn_dim)  # position-wise, so it may run in chunks

    def forward(self, x: Tensor, mask: Tensor | None, layer: LayerArch) -> Tensor:
        x = x + self.attend(x, mask, layer)
        return x + chunked(lambda h: self.feed(h, layer), x, self.ffn_chunks, recompute=self.training)

    def coupling(self, mask: Tensor | None, layer: LayerArch) -> Coupling:
        """The block for `layer` as a reversible layer (see `Block.coupling`)."""
        return Coupling(lambda x: self.attend(x, mask, layer), lambda x: self.feed(x, layer), self, self.ffn_chunks)

    def forward_mixed(
        self,
        x: Tensor,
        mask: Tensor | None,
        weights: dict[str, Tensor],
        space: SearchSpace,
        partial: int = 1,
        edges: Tensor | None = None,
        x2: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """weights: 'attention', 'heads', 'ffn_dim' -> probabilities over the space's choices.

        edges: None, or (2,) weights of the attention node's two inputs (the residual, the
        mixed attention), PC-DARTS's edge normalisation; None is the plain residual (1, 1).
        x2: the second half of a reversible stream (x is the first): returns the pair
        y1 = x + attention(x2), y2 = x2 + ffn(y1), with activations stored (every candidate
        runs, so nothing is recomputed) and the feed-forward unchunked.
        """
        attn = self.attn.forward_mixed(
            self.norm1(x if x2 is None else x2), mask, weights["attention"], weights["heads"], space.heads, partial
        )
        x = x + attn if edges is None else edges[0] * x + edges[1] * attn
        ffn = self.ffn.forward_mixed(self.norm2(x), weights["ffn_dim"], space.ffn_dims)
        return x + ffn if x2 is None else (x, x2 + ffn)

    def extract(self, layer: LayerArch) -> Block:
        block = Block(
            self.norm1.normalized_shape[0], self.attn.extract(layer), self.ffn.extract(layer.ffn_dim), self.ffn_chunks
        )
        block.norm1, block.norm2 = copy.deepcopy(self.norm1), copy.deepcopy(self.norm2)  # on the supernet's device
        return block


class Supernet(nn.Module):
    """Shared weights for every architecture of `space`.

    Args:
        space: the search space.
        shape: the task's sizes (vocabulary, outputs, longest sequence, readout); a causal
            shape builds every candidate's causal form.
        sharing: one of SHARING: "entangled" (attention candidates share Q/K/V/O), "separate"
            (each owns its own; the CLI's default, configs/search.yaml), or "entangled_gain"
            (shared, plus per-candidate input/output gains).

    Shape: tokens (b, n) long, mask (b, n) bool (True = real) -> (b, C) or (b, n, C); as
    `Subnet` for pairs and forecasters.
    """

    def __init__(self, space: SearchSpace, shape: ModelShape, sharing: str = "entangled"):
        super().__init__()
        if sharing not in SHARING:
            raise ConfigError(f"unknown sharing '{sharing}'; allowed: {', '.join(SHARING)}")
        check_causal(space, shape)  # a causal task and an op without a causal form: one line, why
        cost.check_space_size(space, shape, f"space '{space.name}'")  # before allocating a thing
        self.space = space
        self.shape, self.sharing = shape, sharing
        self.recompute = True  # memory.reversible only: False stores activations (tests' reference)
        self.embed = make_embedding(space.dim, shape)
        self.blocks = nn.ModuleList(
            SuperBlock(space, shape.positions(), sharing, shape.causal) for _ in range(space.max_depth)
        )
        self.readout = make_readout(space.dim, shape)

    def forward(self, tokens: Tensor, arch: Arch, mask: Tensor | None = None) -> Tensor:
        self.space.validate(arch)
        tokens, mask = self.readout.fold(tokens, mask)  # the batch of sequences the blocks run on
        x = self.embed(tokens)
        if self.space.memory.reversible:
            couplings = [block.coupling(mask, layer) for block, layer in zip(self.blocks, arch.layers)]
            return self.readout(run_blocks(x, couplings, self.training, self.recompute), mask, tokens)
        for block, layer in zip(self.blocks, arch.layers):
            x = block(x, mask, layer)
        return self.readout(x, mask, tokens)

    def forward_mixed(
        self,
        tokens: Tensor,
        weights: dict[str, Tensor],
        mask: Tensor | None = None,
        hard: bool = False,
        partial: int = 1,
        edges: Tensor | None = None,
    ) -> Tensor:
        """The supernet under a distribution over architectures (DARTS / GDAS).

        `weights` maps every key of `space.decisions()` to probabilities over its choices.
        Soft: every candidate runs and outputs mix by weight; depth mixes the hidden states at
        each allowed depth ("exits"); blocks past the deepest exit of nonzero weight do not run.
        Hard (GDAS): each weight vector is a straight-through
        one-hot sample, so only the chosen path runs (single-path memory) and its outputs are
        scaled by the gate value (1 forward, a gradient to every logit backward).
        partial, edges (soft only): PC-DARTS partial heads and, per layer, edge weights (L, 2);
        see `SuperAttention.forward_mixed` and `SuperBlock.forward_mixed`.
        """
        if hard:
            return self._forward_hard(tokens, weights, mask)
        tokens, mask = self.readout.fold(tokens, mask)
        x = self.embed(tokens)
        reversible = self.space.memory.reversible
        x2 = x if reversible else None  # reversible: the stream is the pair (x, x2)
        exits = []
        deepest = max((d for d, w in zip(self.space.depths, weights["depth"]) if w != 0), default=len(self.blocks))
        for i, block in enumerate(self.blocks[:deepest]):
            layer_w = {f: weights[f"layer{i}.{f}"] for f in LAYER_FIELDS}
            x = block.forward_mixed(x, mask, layer_w, self.space, partial, None if edges is None else edges[i], x2)
            if reversible:
                x, x2 = x
            if i + 1 in self.space.depths:
                exits.append((x + x2) / 2 if reversible else x)
        mixed = sum(w * h for w, h in zip(weights["depth"], exits))
        return self.readout(mixed, mask, tokens)

    def _forward_hard(self, tokens: Tensor, weights: dict[str, Tensor], mask: Tensor | None) -> Tensor:
        decisions = self.space.decisions()
        picked = {key: int(weights[key].argmax()) for key in decisions if key in weights}
        depth = decisions["depth"][picked["depth"]]
        tokens, mask = self.readout.fold(tokens, mask)
        x = self.embed(tokens)
        reversible = self.space.memory.reversible
        x2 = x  # reversible: the second half of the stream, stored activations (see forward_mixed)
        for i, block in enumerate(self.blocks[:depth]):
            gate = {f: weights[f"layer{i}.{f}"][picked[f"layer{i}.{f}"]] for f in LAYER_FIELDS}
            layer = LayerArch(*(decisions[f"layer{i}.{f}"][picked[f"layer{i}.{f}"]] for f in LAYER_FIELDS))
            x = x + block.attend(x2 if reversible else x, mask, layer) * (gate["attention"] * gate["heads"])
            ffn = block.feed(x, layer) * gate["ffn_dim"]
            if reversible:
                x2 = x2 + ffn
            else:
                x = x + ffn
        x = (x + x2) / 2 if reversible else x
        # The depth gate scales the logits: on the readout's input, its LayerNorm would cancel
        # the scale and with it every gradient to the depth logits.
        return self.readout(x, mask, tokens) * weights["depth"][picked["depth"]]

    @torch.no_grad()
    def extract(self, arch: Arch) -> Subnet:
        """A standalone `Subnet` holding copies of exactly the weights `arch` uses."""
        spec = ModelSpec(arch, self.space, self.shape)  # checks that arch lies in the space
        with torch.device("meta"):  # the skeleton's own weights are replaced below
            subnet = Subnet(spec)
        subnet.embed = copy.deepcopy(self.embed)
        subnet.readout = copy.deepcopy(self.readout)
        subnet.blocks = nn.ModuleList(block.extract(layer) for block, layer in zip(self.blocks, arch.layers))
        return subnet
