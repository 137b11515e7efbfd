"""Keep freed memory in the process while a training run frees and allocates the same large buffers every step.

A training step on the CPU allocates and frees hundreds of megabytes: fp32 copies of each layer's gradient,
chunk x vocabulary logits, the embedding's gradient. glibc serves every block above its mmap threshold with a
fresh mmap and returns it to the system when it is freed, so the next step page-faults the same memory in again,
zeroed, one page at a time: on the machines this project runs on that was 10-20% of a step (bench/dpo_throughput.py).
`retain_freed_memory()` makes glibc serve large blocks from its heap and keep freed heap memory while a run lasts,
then gives back what is free. Elsewhere (macOS, musl) it does nothing. The peak memory is the run's own either way.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Iterator

# mallopt parameters (malloc.h) and glibc's defaults for the two this module changes
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
KEEP_UP_TO = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can be given


@functools.cache
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def retain_freed_memory() -> Iterator[bool]:
    """While inside: large blocks come from the heap and freed memory stays in the process. Yields whether it could
    (glibc only). On leaving, glibc's defaults are set again and the free heap is returned to the system."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    changed = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO) == 1
    try:
        yield changed
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
