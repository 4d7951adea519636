"""Reversible residual layers (RevNet, Gomez et al. 2017, https://arxiv.org/abs/1707.04585, as the
Reformer uses them, Kitaev et al. 2020 sec. 3, https://arxiv.org/abs/2001.04451).

The residual stream is a pair (x1, x2); a layer maps it to y1 = x1 + f(x2), y2 = x2 + g(y1),
whose inputs follow from its outputs: x2 = y2 - g(y1), x1 = y1 - f(x2). `reversible` keeps
only the last pair for backward and recomputes each layer's inputs and activations there, one
layer at a time, so training memory does not grow with depth. A recomputation replays the
random number state and the module's buffers (e.g. a Performer's feature redraw counter) of the
forward, so it computes exactly what the forward did.
# b batch, n sequence, D model width
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import get_device_states, set_device_states

from nas.ops.chunked import chunked


@dataclass(frozen=True)
class Coupling:
    """One reversible layer: y1 = x1 + f(x2), y2 = x2 + g(y1)."""

    f: Callable[[Tensor], Tensor]  # e.g. attention of its normed input; (b, n, D) -> (b, n, D)
    g: Callable[[Tensor], Tensor]  # position-wise, e.g. the feed-forward of its normed input
    module: nn.Module  # holds every parameter and buffer f and g use
    g_chunks: int = 1  # g runs on this many pieces of the sequence (chunked feed-forward)


def coupled(x1: Tensor, x2: Tensor, couplings: list[Coupling], recompute: bool = False) -> tuple[Tensor, Tensor]:
    """The layers with plain autograd (activations stored): the reference, and inference.

    recompute: checkpoint g's chunks in training (see `chunked`).
    Shape: x1, x2 (b, n, D) -> y1, y2 (b, n, D).
    """
    for c in couplings:
        x1 = x1 + c.f(x2)  # (b, n, D)
        x2 = x2 + chunked(c.g, x1, c.g_chunks, recompute)  # (b, n, D)
    return x1, x2


def reversible(x1: Tensor, x2: Tensor, couplings: list[Coupling]) -> tuple[Tensor, Tensor]:
    """`coupled`, with activations recomputed in backward instead of stored (when grad is on).

    Without grad mode it is `coupled` itself, which is also what torch.export traces.
    Shape: x1, x2 (b, n, D) -> y1, y2 (b, n, D).
    """
    if not torch.is_grad_enabled():
        return coupled(x1, x2, couplings)
    params: list[nn.Parameter] = []
    seen: set[int] = set()
    for c in couplings:
        for p in c.module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return _ReversibleStack.apply(x1, x2, couplings, *params)


class _Replay:
    """The random number state and the changed buffers at one point of the forward."""

    def __init__(self, module: nn.Module, like: Tensor):
        self.cpu_rng = torch.get_rng_state()
        # as torch.utils.checkpoint: the CUDA generators of the devices the inputs live on
        self.devices, self.device_rng = get_device_states(like) if like.is_cuda else ([], [])
        self.buffers = {name: b.clone() for name, b in module.named_buffers()}
        self.versions = {name: b._version for name, b in module.named_buffers()}

    def keep_changed(self, module: nn.Module) -> set[str]:
        """Drop the copies of buffers the forward left alone; the names of the others."""
        changed = {n for n, b in module.named_buffers() if b._version != self.versions[n]}
        self.buffers = {n: b for n, b in self.buffers.items() if n in changed}
        return changed

    @contextlib.contextmanager
    def replay(self, module: nn.Module) -> Iterator[None]:
        """Run the block within with the module's buffers and the random state as they were."""
        buffers = dict(module.named_buffers())
        with torch.no_grad():
            for name, value in self.buffers.items():
                buffers[name].copy_(value)
        with torch.random.fork_rng(devices=self.devices):  # the caller's random state comes back
            torch.set_rng_state(self.cpu_rng)
            set_device_states(self.devices, self.device_rng)
            yield


class _ReversibleStack(torch.autograd.Function):
    """Forward without a graph; backward reconstructs each layer's inputs from its outputs."""

    @staticmethod
    def forward(ctx, x1: Tensor, x2: Tensor, couplings: list[Coupling], *params: Tensor):
        ctx.couplings = couplings
        ctx.params = params
        ctx.autocast = {
            "device_type": x1.device.type,
            "dtype": torch.get_autocast_dtype(x1.device.type),
            "enabled": torch.is_autocast_enabled(x1.device.type),
        }
        ctx.replays = []
        with torch.no_grad():
            for c in couplings:
                before_f = _Replay(c.module, x1)
                x1 = x1 + c.f(x2)  # (b, n, D)
                before_g = _Replay(c.module, x1)
                x2 = x2 + chunked(c.g, x1, c.g_chunks)  # (b, n, D)
                # f's replay restores every buffer the layer changed, g's those g changed
                changed = before_f.keep_changed(c.module)
                before_g.keep_changed(c.module)
                ctx.replays.append((before_f, before_g, changed))
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    @once_differentiable
    def backward(ctx, dy1: Tensor, dy2: Tensor):
        y1, y2 = ctx.saved_tensors
        index = {id(p): i for i, p in enumerate(ctx.params)}
        grads: list[Tensor | None] = [None] * len(ctx.params)

        def accumulate(params, param_grads):
            for p, grad in zip(params, param_grads):
                if grad is not None:
                    i = index[id(p)]
                    grads[i] = grad if grads[i] is None else grads[i] + grad

        for c, (before_f, before_g, changed) in zip(reversed(ctx.couplings), reversed(ctx.replays)):
            params = [p for p in c.module.parameters() if id(p) in index]
            buffers = dict(c.module.named_buffers())
            after = {n: buffers[n].clone() for n in changed}  # where the forward left them
            with torch.enable_grad(), torch.autocast(**ctx.autocast):
                # g, one chunk at a time: x2 = y2 - g(y1); dx1 = dy1 + dy2 dg/dy1
                x2, dx1 = [], []
                with before_g.replay(c.module):
                    for y1_c, y2_c, dy1_c, dy2_c in zip(
                        *(t.tensor_split(c.g_chunks, dim=1) for t in (y1, y2, dy1, dy2))
                    ):
                        z = y1_c.detach().requires_grad_()  # (b, n/chunks, D)
                        gz = c.g(z)
                        dz, *param_grads = torch.autograd.grad(gz, (z, *params), dy2_c, allow_unused=True)
                        accumulate(params, param_grads)
                        x2.append(y2_c - gz.detach())
                        dx1.append(dy1_c + dz)
                x2, dx1 = torch.cat(x2, dim=1), torch.cat(dx1, dim=1)  # (b, n, D) each
                # f: x1 = y1 - f(x2); dx2 = dy2 + dx1 df/dx2
                z = x2.detach().requires_grad_()  # (b, n, D)
                with before_f.replay(c.module):
                    fz = c.f(z)
                dz, *param_grads = torch.autograd.grad(fz, (z, *params), dx1, allow_unused=True)
                accumulate(params, param_grads)
            with torch.no_grad():
                for name, value in after.items():
                    buffers[name].copy_(value)
            y1, y2 = y1 - fz.detach(), x2
            dy1, dy2 = dx1, dy2 + dz
        return (dy1, dy2, None, *grads)
