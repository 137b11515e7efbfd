"""Keep freed memory in the process while a training run frees and allocates the same large buffers every step.

A training step on the CPU allocates and frees hundreds of megabytes: fp32 copies of each layer's gradient,
chunk x vocabulary logits, the embedding's gradient. glibc serves a block above its mmap threshold with a fresh
mapping and unmaps it when freed, and gives the top of its heap back to the system above its trim threshold, so the
next step page-faults the same memory in again, zeroed, a page at a time: 100,000 to 700,000 minor faults a step on
SmolLM2-135M (about 1,300 inside this context), about 5-15% of a step on the machines this project runs on
(bench/dpo_throughput.py). `retain_freed_memory()` makes glibc serve large blocks from its heap and keep freed heap
memory while a run lasts, then gives back what is free. Elsewhere (macOS, musl) it does nothing.

glibc adjusts its two thresholds itself until a program sets either, and never again after: so on leaving they are
set where its own adjustment takes them once large blocks have been freed (mmap above 32 MiB, trim above twice
that), which keeps a long-lived worker's sampling buffers (a few MiB a step) in the heap too. Nested or overlapping
uses (threads) share one setting: the first to enter sets it, the last to leave restores it.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
import threading
from collections.abc import Iterator

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536
MMAP_THRESHOLD_CEILING = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where glibc's adjustment stops
KEEP_UP_TO = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can be given

_lock = threading.Lock()
_users = 0


@functools.cache
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def give_back_free() -> bool:
    """Give the free heap back to the system now (glibc's malloc_trim), inside retain_freed_memory too; returns whether
    it could (glibc only). For a run's end, before its checkpoint is written: the optimiser's state and the steps'
    buffers are free by then, and the checkpoint's pages (the page cache) take the pages just given back instead of
    growing the machine's memory by the checkpoint's size."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@contextlib.contextmanager
def retain_freed_memory() -> Iterator[bool]:
    """While inside: large blocks come from the heap and freed memory stays in the process. Yields whether it could
    (glibc only). On leaving (the last user), the thresholds above are set and the free heap is given back."""
    global _users
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        _users += 1
        if _users == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO)
    try:
        yield True
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_CEILING)
                libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_CEILING)
                libc.malloc_trim(0)
