"""reuse_freed_memory: freed memory stays in the process (glibc), and the user's own choice wins.

Each case runs in a fresh interpreter: the settings last for the life of a process.
"""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

# Frees a 64 MiB tensor (above glibc's 32 MiB mmap threshold) and prints whether the settings
# were applied and how much resident memory the free gave back to the OS, in MiB.
FREE_A_LARGE_TENSOR = """
import resource, sys, torch
from nas.cpu_allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
x = torch.ones(64 * 2**20 // 4)
before = rss_mib()
del x
print(applied, round(before - rss_mib()))
"""


def free_a_large_tensor(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", FREE_A_LARGE_TENSOR, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_freed_large_tensor_stays_in_the_process():
    applied, returned = free_a_large_tensor("reuse")
    assert applied and returned < 8
    # the reference: glibc's defaults unmap it at once
    applied, returned = free_a_large_tensor("glibc")
    assert not applied and returned > 56


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=1"},
        {"LD_PRELOAD": "/nonexistent/libjemalloc.so.2"},
    ],
)
def test_the_users_own_allocator_settings_win(env):
    applied, _ = free_a_large_tensor("reuse", **env)
    assert not applied
