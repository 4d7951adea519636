"""Counting what a function really does, to check the mixers' cost functions: FLOPs by PyTorch's
FlopCounterMode (matmuls and convolutions; other ops by the formulas given), and the elements
autograd keeps for backward by saved-tensor hooks."""

import torch
from torch.utils.flop_counter import FlopCounterMode


def counted_flops(fn, extra: dict | None = None) -> int:
    """FLOPs FlopCounterMode counts while `fn()` runs; `extra` maps more aten ops to formulas
    (called with the argument shapes and out_shape, as torch.utils.flop_counter's own)."""
    with FlopCounterMode(display=False, custom_mapping=extra or {}) as counter:
        fn()
    return counter.get_total_flops()


def saved_elements(fn, exclude=()) -> int:
    """fp32 elements (bytes / 4) of the distinct storages autograd saves for backward while `fn()`
    runs, leaving out the storages of `exclude` (inputs and parameters, held anyway) and boolean
    masks (constants of the chunk size)."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    kept = {}

    def pack(t):
        where = t.untyped_storage().data_ptr()
        if where not in skip and (t.is_floating_point() or t.is_complex()):
            kept[where] = t.untyped_storage().nbytes() // 4
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(kept.values())


def grads(out: torch.Tensor, inputs, seed: int = 1) -> list[torch.Tensor]:
    """Gradients of a random projection of `out` with respect to `inputs`."""
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return list(torch.autograd.grad((out * weight).sum(), inputs))
