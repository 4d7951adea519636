"""The backward half of a bidirectional linear-recurrent mixer.

A bidirectional mixer is the causal scan plus a scan over the reversed sequence whose query at t
reads the reversed state after positions n-1 .. t+1 only, so every pair (t, s) is counted once:
the forward scan covers s <= t (the diagonal included), the backward one s > t. Hydra (Hwang et
al. 2024, https://arxiv.org/abs/2407.09941) also counts each pair once, with a quasiseparable
matrix: it shifts both scans off the diagonal and adds the diagonal as its own term; bidirectional
Mamba (Vision Mamba) sums two unshifted scans and counts the diagonal twice. Both directions
read the same queries, keys and values here; a mixer may give the backward scan its own gates.
# b batch, h heads, n sequence
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def backward_scan(scan: Callable[..., Tensor], q: Tensor, *per_position: Tensor) -> Tensor:
    """o_t = the causal `scan` run from the end, with q_t reading the state of positions > t.

    Args:
        scan: (q, *per_position) -> (b, h, n, dv), a causal scan (inclusive: o_t reads s <= t).
        q: (b, h, n, ...) the queries.
        per_position: tensors whose dim 2 is the position (keys, values, gates), reversed with q.

    Returns:
        (b, h, n, dv); the last position, with nothing after it, is 0.
    """
    shifted = torch.cat([torch.zeros_like(q[:, :, :1]), q[:, :, :-1]], dim=2)  # shifted[t + 1] = q_t
    y = scan(shifted.flip(2), *(x.flip(2) for x in per_position)).flip(2)  # y[t + 1]: q_t . state(>= t + 1)
    return torch.cat([y[:, :, 1:], torch.zeros_like(y[:, :, :1])], dim=2)  # (b, h, n, dv)
