"""Keep freed CPU memory for reuse instead of handing it back to the OS (glibc malloc).

glibc serves each allocation above 32 MiB with a fresh mmap and unmaps it when freed, so every
training step page-faults its large activations in again. On 2 cores that was a fifth to two
fifths of a 16K-token attention step (scripts/benchmarks/attention.py --glibc times both).
PyTorch's CPU tuning guide recommends preloading jemalloc or TCMalloc for this; two glibc
settings give the same reuse with no extra library. The process's RSS then stays at its peak
until it exits, as memory held by PyTorch's CUDA caching allocator does.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory in the process: no allocation is served by its own mmap, and
    free memory is never trimmed back (the largest threshold mallopt takes, 2 GiB).

    Returns whether the settings were applied. They are not off Linux, where the C library has no
    mallopt (e.g. musl), or where the user chose already: MALLOC_* or GLIBC_TUNABLES malloc
    settings in the environment, or another allocator in LD_PRELOAD.
    """
    if not sys.platform.startswith("linux") or _user_chose():
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (the lookup is the test: glibc only; musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def _user_chose() -> bool:
    preloaded = os.environ.get("LD_PRELOAD", "")
    return (
        any(name in os.environ for name in _USER_SETTINGS)
        or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
        or any(allocator in preloaded for allocator in ("jemalloc", "tcmalloc", "mimalloc"))
    )
