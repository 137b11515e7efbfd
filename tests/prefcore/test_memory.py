"""retain_freed_memory: inside it, large blocks come from glibc's heap and stay there when freed; outside, glibc
maps and unmaps them again. Read from glibc's own accounting (mallinfo2), on real allocations."""
import ctypes
import os

import pytest

from prefcore.memory import _glibc, give_back_free, retain_freed_memory

BLOCK = 64 * 1024 * 1024


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33 or later")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mapped_after_malloc(libc) -> int:
    """Bytes newly mapped by mmap for one touched, freed BLOCK."""
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(BLOCK)
    assert block
    ctypes.memset(block, 1, BLOCK)
    mapped = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return mapped


def test_large_blocks_come_from_the_heap_and_are_kept_only_inside():
    libc = _libc()
    with retain_freed_memory() as retained:
        assert retained
        assert _mapped_after_malloc(libc) == 0  # from the heap, not a mapping of its own
        assert libc.mallinfo2().fordblks >= BLOCK  # freed, and kept for the next step's block of the same size
        heap = libc.mallinfo2().arena
        assert _mapped_after_malloc(libc) == 0 and libc.mallinfo2().arena == heap  # reused, not grown
        held = _rss()
    assert held - _rss() >= BLOCK // 2  # what is free goes back to the system on leaving


def test_give_back_free_returns_the_free_heap_inside_and_the_setting_stays():
    """A run's end gives its freed buffers back before the checkpoint is written (training.dpo.trainer): the memory
    goes back to the system at once, and large blocks still come from the heap while the run lasts."""
    libc = _libc()
    with retain_freed_memory():
        _mapped_after_malloc(libc)
        held = _rss()
        assert give_back_free()
        assert held - _rss() >= BLOCK // 2
        assert _mapped_after_malloc(libc) == 0


def test_nested_uses_keep_the_setting_until_the_last_leaves():
    libc = _libc()
    with retain_freed_memory():
        with retain_freed_memory():
            pass
        assert _mapped_after_malloc(libc) == 0  # the outer run still keeps its blocks in the heap


def test_after_leaving_blocks_above_the_ceiling_are_mapped_and_unmapped_again():
    libc = _libc()
    # a block larger than any free chunk the heap can hold from earlier tests: glibc maps it for itself
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(1 << 33)  # 8 GiB of address space, never touched
    if not block:
        pytest.skip("this system refuses 8 GiB of untouched address space (strict overcommit)")
    try:
        assert libc.mallinfo2().hblkhd - before >= 1 << 33
    finally:
        libc.free(block)
    assert libc.mallinfo2().hblkhd == before
