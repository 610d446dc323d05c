"""Process memory of long CPU training runs: hand freed tensor buffers back to the kernel.

A GRPO step allocates and frees many large, differently sized buffers (rollout KV caches, the scoring and loss
passes' activations). glibc serves big requests with `mmap` only above its *dynamic* mmap threshold, which rises
to 32 MB after the first large free; buffers below it come from the heap, and freed heap memory stays in the
process. Measured on the stage-6 GRPO runs (docs/results.md), the resident set then climbed from 8 to 21 GB while
live allocations stayed near 190 MB. Fixing the threshold at 1 MB sends every larger buffer through `mmap`, which
returns it to the kernel on free.

`resident_gb` and `peak_resident_gb` read the resident set, so that a run logs it every step (GRPO logs both as
`memory/rss_gb` and `memory/peak_rss_gb`) and an out-of-memory kill can be traced to the step where it began.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys

__all__ = ["M_MMAP_THRESHOLD", "fix_mmap_threshold", "peak_resident_gb", "resident_gb"]

M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter number for the mmap threshold (`malloc.h`)."""


def fix_mmap_threshold(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process (which also stops its dynamic growth).

    Args:
        threshold (`int`, *optional*, defaults to 1 MiB): Allocations of at least this many bytes use `mmap` and
            go back to the kernel when freed. `0` leaves malloc as it is.

    Returns:
        `bool`: Whether the threshold was set: `False` for `0`, off Linux, without glibc, or if `mallopt` refused.

    Raises:
        ValueError: If `threshold` is negative.
    """
    if threshold < 0:
        raise ValueError(f"mmap threshold must be >= 0 bytes, got {threshold}")
    if threshold == 0 or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1


def resident_gb() -> float:
    """This process's resident set now, in GiB (`/proc/self/statm`); `0.0` where there is no `/proc`."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_resident_gb() -> float:
    """The largest resident set this process has had, in GiB (`getrusage`; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)
