"""Peak tensor memory of a piece of code on any device, CPU included: every tensor storage an
operator creates is counted from its allocation until Python sees it freed.

`torch.cuda.max_memory_allocated` exists only on CUDA and the CPU profiler misses most
allocations; this sees every storage created by an operator on the calling thread (autograd's
CPU backward runs there too). It agrees with the process's resident-set high-water mark to
within a few percent (scripts/benchmarks/memory.py reports both).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakMemory(TorchDispatchMode):
    """`with PeakMemory() as m: ...` then `m.peak` and `m.current` in bytes.

    Only storages created inside the block count: tensors that existed before (weights, inputs)
    are the baseline, not part of the peak.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[tuple[int, int], int] = {}  # (address, bytes) of each storage -> bytes
        self.current = 0  # bytes of the counted storages still alive
        self.peak = 0  # the most `current` has been

    def _freed(self, key: tuple[int, int]) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # views and in-place results share an input's storage: nothing new (and an input may be
        # a weight allocated before the block, which must not count)
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and not t.is_meta
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_meta:
                storage = t.untyped_storage()
                key = (storage.data_ptr(), storage.nbytes())
                if storage.nbytes() and key not in self.live and key[0] not in inputs:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._freed, key)
        return out
