"""Process-level performance settings for CPU training.

glibc serves allocations above its mmap threshold (128 KiB at start) with fresh ``mmap`` pages and
returns them on free, so every large temporary tensor (a minibatch's activations) page-faults
anew. Raising the mmap and trim thresholds keeps those pages in the heap for reuse: measured on
the 2-core dev box, one PPO minibatch step (8192 samples, 64×64 actor and critic) went from
21 ms to 13 ms. The cost is a process that holds on to freed memory instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def configure_cpu_allocator(threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap/trim thresholds (Linux only, once per process); True if applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
