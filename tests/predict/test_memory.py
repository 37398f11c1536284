"""Free heap pages go back to the system between row bands (glibc)."""

import ctypes
import platform
import sys

import pytest

from stsun_lightning.predict.memory import release_free_memory

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
glibc = pytest.mark.skipif(not ON_GLIBC, reason="malloc_trim is glibc's")


def _anonymous_mib() -> float:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))
    return kib / 1024


@glibc
def test_freed_holes_in_the_heap_are_returned_to_the_system():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 3000  # under the mmap threshold: from the heap, ~190 MiB
    blocks = [libc.malloc(size) for _ in range(count)]
    try:
        for block in blocks:
            ctypes.memset(block, 1, size)  # resident
        for block in blocks[::2]:  # holes between live blocks: the heap cannot shrink
            libc.free(block)
        before = _anonymous_mib()
        assert release_free_memory()
        after = _anonymous_mib()
        assert before - after > 0.6 * (count // 2) * size / 2**20
    finally:
        for block in blocks[1::2]:
            libc.free(block)


def test_release_says_whether_it_could_release():
    assert [release_free_memory() for _ in range(3)] == [ON_GLIBC] * 3
