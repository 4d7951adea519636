"""Chunked feed-forward (Reformer sec. 4, Kitaev et al. 2020, https://arxiv.org/abs/2001.04451):
a position-wise function applied to pieces of the sequence, so that only one piece's hidden
units exist at a time.
# b batch, n sequence, D model width
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def chunked(fn: Callable[[Tensor], Tensor], x: Tensor, chunks: int, recompute: bool = False) -> Tensor:
    """`fn(x)` computed on `chunks` pieces of the sequence; equal to `fn(x)` for a position-wise fn.

    Without gradients (inference, or the forward of a reversible stack) only one piece's
    intermediates are alive at a time. Plain autograd would keep every piece's intermediates
    for backward, so with `recompute` (training) each piece is checkpointed: backward
    recomputes one piece at a time and the pieces' intermediates are never alive together.

    Under torch.export / torch.compile it is `fn(x)`: the same function, and pieces of a
    symbolic length would pin the program to one length.

    Shape: x (b, n, D) -> (b, n, D); fewer than `chunks` pieces when n < chunks.
    """
    if chunks == 1 or torch.compiler.is_compiling():
        return fn(x)
    pieces = x.tensor_split(chunks, dim=1)  # each (b, n/chunks, D)
    if recompute and torch.is_grad_enabled():
        return torch.cat([checkpoint(fn, p, use_reentrant=False) for p in pieces], dim=1)  # (b, n, D)
    return torch.cat([fn(p) for p in pieces], dim=1)  # (b, n, D)
