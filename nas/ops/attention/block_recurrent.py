"""Block-Recurrent attention (Hutchins et al. 2022, https://arxiv.org/abs/2203.07852): sliding-window
attention plus S state vectors carried from block to block and updated through gated cross-attention.

Tokens attend to their window (`local` with the same window: |i - j| <= window // 2) and, through
the shared queries, to the state entering their block; the outputs are summed. The state reads
each block of `window` tokens through the shared keys and values (the paper shares them between
directions), attends to itself, and is gated: "fixed" (a learned per-channel gate) or "lstm"
(input and forget gates), after an MLP ending in tanh ("single") or a linear map ("skip"), as in the
paper's code (google-research/meliad; its two-gate "dual" layout is left out). In the bidirectional
form tokens see both sides of their window while the state runs forward over the blocks; the causal
form is the paper's: the left half of the window (causal `local`), and the state entering the
block, which only earlier blocks wrote. Its step form carries the local ring buffer, the current
block's keys and values, the state and the state's projections, and updates the state at the end
of each block. To slice with the heads, each head holds its own state of S vectors of head width, with its own
projections and gates (the paper's state is one of model width shared by all heads); its keys and
values serve both directions as in the paper, so a token reads the state with the shared query q
instead of a second query projection (the state's own key projection absorbs that one).
# b batch, h heads, n sequence, d head dim, m blocks, c block size, s state vectors, f update width,
# W window (block size of the step form)
"""

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.attention.base import AttentionCore, write_slot
from nas.ops.attention.local import LocalAttention, LocalConfig
from nas.ops.attention.registry import ATTENTION

GATES = ("fixed", "lstm")
UPDATES = ("single", "skip")


@dataclasses.dataclass(frozen=True)
class BlockRecurrentConfig:
    window: int = 256  # block size W; a token also sees the keys within window // 2 positions
    states: int = 64  # recurrent state vectors S per head
    gate: str = "fixed"  # "fixed": state g + z (1 - g), g learned; "lstm": state f(a) + z i(a)
    update: str = "single"  # "single": z = tanh(MLP(attention)), one gate; "skip": z linear, no MLP

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if self.states < 1:
            raise ValueError(f"states must be >= 1, got {self.states}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}; got '{self.gate}'")
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}; got '{self.update}'")


@ATTENTION.register("block_recurrent")
class BlockRecurrentAttention(AttentionCore):
    Config = BlockRecurrentConfig

    def __init__(self, head_dim: int, max_heads: int, max_len: int, config=None, causal: bool = False):
        super().__init__(head_dim, max_heads, max_len, config, causal)
        h, d, s = max_heads, head_dim, self.config.states
        self.local = LocalAttention(head_dim, max_heads, max_len, LocalConfig(window=self.config.window), causal)
        # Small initial state, unit position embeddings: each state vector learns its own queries
        # (the paper's initialisation).
        self.state0 = nn.Parameter(torch.randn(h, s, d) * 0.1)  # (h, s, d)
        self.state_pos = nn.Parameter(torch.randn(h, s, d))  # (h, s, d)
        # The state's queries (self), keys, values (both directions), queries of the block.
        self.state_proj = nn.Parameter(torch.randn(h, d, 4 * d) * d**-0.5)  # (h, d, 4d)
        f = 2 * d  # self- and cross-attention outputs side by side, as the paper concatenates them
        if self.config.update == "single":
            self.w1 = nn.Parameter(torch.randn(h, 2 * d, f) * (2 * d) ** -0.5)  # (h, 2d, f)
            self.b1 = nn.Parameter(torch.zeros(h, f))  # (h, f)
            self.w2 = nn.Parameter(torch.randn(h, f, d) * f**-0.5)  # (h, f, d)
            self.b2 = nn.Parameter(torch.zeros(h, d))  # (h, d)
        else:
            self.w_out = nn.Parameter(torch.randn(h, 2 * d, d) * (2 * d) ** -0.5)  # (h, 2d, d)
            self.b_out = nn.Parameter(torch.zeros(h, d))  # (h, d)
        if self.config.gate == "fixed":
            self.gate_bias = nn.Parameter(torch.randn(h, d) * 0.1)  # (h, d)
        else:
            # Input and forget gates side by side; small weights so the +-1 offsets rule at first.
            self.w_gate = nn.Parameter(torch.randn(h, f, 2 * d) * 0.1 * f**-0.5)  # (h, f, 2d)
            self.b_gate = nn.Parameter(torch.randn(h, 2 * d) * 0.1)  # (h, 2d)
        self.per_head = tuple(name for name, _ in self.named_parameters(recurse=False))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        b, h, n, d = q.shape
        c = min(self.config.window, n)
        m = -(-n // c)
        s = self.config.states
        pad = m * c - n  # the last block is padded, never truncated
        real = torch.ones(b, n, dtype=torch.bool, device=q.device) if mask is None else mask
        real = F.pad(real, (0, pad), value=False).reshape(b, m, c)  # (b, m, c)
        bias = torch.zeros(real.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(~real, torch.finfo(q.dtype).min).transpose(0, 1)[
            :, None, :, None, :
        ]  # (m, 1, b, 1, c)
        # A block of padding only leaves the state as it was.
        keep = real.any(-1).T.repeat_interleave(s, dim=1)[:, None, :, None]  # (m, 1, b s, 1)
        # The loop runs heads-first, (h, b s, .), so that per-head weights and biases are one baddbmm
        # each. Blocks are views split once (indexing one per step would make backward zero-fill all
        # of k per block); only the state after a full block is read, so the short last one needs no pad.
        kb, vb = (x.transpose(0, 1).split(c, dim=2) for x in (k, v))  # each block (h, b, c, d)
        p = self._head_params(h, q)  # sliced once, for the same reason
        state, pos = self._start(p, b)  # (h, b s, d), (h, b s, 4d)
        w = p["state_proj"]  # (h, d, 4d)
        keys, values = [], []  # of the state entering each block
        for t in range(m):
            # (norm(state) + position) W, with the position's part computed once above.
            proj = torch.baddbmm(pos, F.layer_norm(state, (d,)), w).view(h, b, s, 4 * d)
            sq, sk, sv, sq2 = proj.split(d, dim=-1)  # each (h, b, s, d)
            keys.append(sk)
            values.append(sv)
            if t == m - 1:
                break  # the state after the last block is read by no token
            own = F.scaled_dot_product_attention(sq, sk, sv)  # (h, b, s, d)
            read = F.scaled_dot_product_attention(sq2, kb[t], vb[t], attn_mask=bias[t])  # (h, b, s, d)
            updated = self._update(state, torch.cat([own, read], dim=-1).view(h, b * s, 2 * d), p)
            state = torch.where(keep[t], updated, state)  # (h, b s, d)

        qb = F.pad(q.transpose(0, 1), (0, 0, 0, pad)).reshape(h, b * m, c, d)  # (h, b m, c, d)
        sk = torch.stack(keys, dim=2).view(h, b * m, s, d)  # (h, b m, s, d)
        sv = torch.stack(values, dim=2).view(h, b * m, s, d)  # (h, b m, s, d)
        from_state = F.scaled_dot_product_attention(qb, sk, sv).view(h, b, m * c, d)[:, :, :n]
        return self.local(q, k, v, mask) + from_state.transpose(0, 1)  # (b, h, n, d)

    def _head_params(self, h: int, like: Tensor) -> dict[str, Tensor]:
        """The parameters of the first h heads, and the gates' constant parts."""
        d = self.head_dim
        p = {name: getattr(self, name)[:h] for name in self.per_head}
        if self.config.gate == "fixed":
            p["gate"] = torch.sigmoid(p["gate_bias"])[:, None]  # (h, 1, d)
        else:  # biased to remember at first, as in the paper: input gate - 1, forget gate + 1
            offset = torch.tensor([-1.0, 1.0], dtype=like.dtype, device=like.device).repeat_interleave(d)
            p["b_gate"] = (p["b_gate"] + offset)[:, None]  # (h, 1, 2d)
        return p

    def _start(self, p: dict[str, Tensor], b: int) -> tuple[Tensor, Tensor]:
        """The state entering the first block, (h, b s, d), and the positions' part of its
        projections, (h, b s, 4d)."""
        h, s, d = p["state0"].shape
        pos = (p["state_pos"] @ p["state_proj"])[:, None].expand(h, b, s, 4 * d).reshape(h, b * s, 4 * d)
        return p["state0"][:, None].expand(h, b, s, d).reshape(h, b * s, d), pos

    def init_state(self, batch, heads, length, device=None, dtype=None):
        self.check_causal()
        ring = self.local.init_state(batch, heads, length, device, dtype)  # (b, h, R, d) x2
        block = min(self.config.window, length)  # the step form's blocks are always `window` long
        kv = torch.zeros(batch, heads, block, self.head_dim, device=device, dtype=dtype)  # (b, h, W, d)
        p = self._head_params(heads, kv)
        state, pos = self._start(p, batch)  # (h, b s, d), (h, b s, 4d)
        proj = torch.baddbmm(pos, F.layer_norm(state, (self.head_dim,)), p["state_proj"])  # (h, b s, 4d)
        state, proj = (x.view(heads, batch, self.config.states, -1).transpose(0, 1).to(kv) for x in (state, proj))
        # the ring, this block's keys and values, the state (b, h, s, d) and its projections (b, h, s, 4d)
        return (*ring, kv, kv.clone(), state.contiguous(), proj.contiguous())

    def step(self, q, k, v, state, position):
        *ring, block_k, block_v, memory, proj = state
        b, h, _, d = q.shape
        s, window = self.config.states, self.config.window
        out, ring = self.local.step(q, k, v, tuple(ring), position)  # (b, h, 1, d)
        sq, sk, sv, sq2 = proj.split(d, dim=-1)  # each (b, h, s, d)
        out = out + F.scaled_dot_product_attention(q, sk, sv)  # (b, h, 1, d): tokens read the state
        at = torch.remainder(position, window)
        block_k, block_v = write_slot(block_k, k, at), write_slot(block_v, v, at)  # (b, h, W, d)
        # At a block's end the state reads the block and moves on. Computed at every position and
        # kept only there: a fixed program for torch.export, with no branch on the position.
        own = F.scaled_dot_product_attention(sq, sk, sv)  # (b, h, s, d)
        read = F.scaled_dot_product_attention(sq2, block_k, block_v)  # (b, h, s, d)
        p = self._head_params(h, q)
        attended = torch.cat([own, read], dim=-1).transpose(0, 1).reshape(h, b * s, 2 * d)  # (h, b s, 2d)
        updated = self._update(memory.transpose(0, 1).reshape(h, b * s, d), attended, p)  # (h, b s, d)
        _, pos = self._start(p, b)
        new_proj = torch.baddbmm(pos, F.layer_norm(updated, (d,)), p["state_proj"])  # (h, b s, 4d)
        updated, new_proj = (x.view(h, b, s, -1).transpose(0, 1) for x in (updated, new_proj))
        end = at == window - 1
        memory, proj = torch.where(end, updated, memory), torch.where(end, new_proj, proj)
        return out, (*ring, block_k, block_v, memory, proj)

    def _update(self, state: Tensor, attended: Tensor, p: dict[str, Tensor]) -> Tensor:
        """The gated state update: (h, b s, d) state, (h, b s, 2d) attention outputs and the
        parameters of the active heads -> next state."""
        if self.config.update == "single":
            hidden = F.relu(torch.baddbmm(p["b1"][:, None], attended, p["w1"]))  # (h, b s, f)
            z = torch.tanh(torch.baddbmm(p["b2"][:, None], hidden, p["w2"]))  # (h, b s, d)
        else:
            hidden = attended  # (h, b s, 2d)
            z = torch.baddbmm(p["b_out"][:, None], attended, p["w_out"])  # (h, b s, d)
        if self.config.gate == "fixed":
            return torch.lerp(z, state, p["gate"])  # state g + z (1 - g)
        i, f = torch.sigmoid(torch.baddbmm(p["b_gate"], hidden, p["w_gate"])).chunk(2, dim=-1)  # each (h, b s, d)
        return state * f + z * i  # (h, b s, d)

    def _sizes(self, n: int) -> tuple[int, int, int]:
        """Block size, blocks, state vectors: the work forward does."""
        c = min(self.config.window, n)
        return c, -(-n // c), self.config.states

    def flops(self, n: int, heads: int) -> int:
        c, m, s = self._sizes(n)
        d, f = self.head_dim, 2 * self.head_dim
        gate = 2 * s * f * 2 * d if self.config.gate == "lstm" else 0
        update = 2 * s * (2 * d * f + f * d) if self.config.update == "single" else 2 * s * 2 * d * d
        step = 2 * 2 * s * (s + c) * d + update + gate  # state self- and cross-attention, update
        per_head = (
            m * 2 * s * d * 4 * d  # the state's projections, once per block
            + (m - 1) * step
            + 2 * 2 * m * c * s * d
        )  # tokens read the state
        return self.local.flops(n, heads) + heads * per_head

    def activation_elements(self, n: int, heads: int) -> int:
        c, m, s = self._sizes(n)
        d = self.head_dim
        step = s * (s + c) + 2 * s * 2 * d + 4 * s * d  # scores, attention outputs, update, gates
        per_head = m * s * 5 * d + (m - 1) * step + m * c * s  # state and its projections, read scores
        return self.local.activation_elements(n, heads) + heads * per_head

    def state_elements(self, n: int, heads: int) -> int:
        block = min(self.config.window, n)
        s, d = self.config.states, self.head_dim
        # the ring; the block's keys and values; the state and its projections
        return self.local.state_elements(n, heads) + heads * (2 * block * d + s * d + s * 4 * d)

    def step_flops(self, n: int, heads: int) -> int:
        c, s, d, f = self.config.window, self.config.states, self.head_dim, 2 * self.head_dim
        gate = 2 * s * f * 2 * d if self.config.gate == "lstm" else 0
        update = 2 * s * (2 * d * f + f * d) if self.config.update == "single" else 2 * s * 2 * d * d
        # once per block of c tokens: the state attends to itself and the block, updates, projects
        per_block = 2 * 2 * s * (s + c) * d + update + gate + 2 * s * d * 4 * d
        return self.local.step_flops(n, heads) + heads * (2 * 2 * s * d + per_block // c)  # + reading the state
