"""Hand the C heap's free pages back to the system between row bands (glibc only).

Prediction allocates and frees the same large buffers for hours: window reads, GDAL's
block cache, torch's activations. glibc raises its mmap threshold each time such a
buffer is freed, so later buffers of that size come from the heap, and the heap keeps
the freed pages: a run's resident memory then grows with its length and varies from run
to run (measured with ``benchmarks/predict_memory.py``: a 8192² raster with a DEM in
another CRS peaked at 1836 MiB, and at 1235 MiB with a fixed threshold). ``malloc_trim``
returns every free page of every arena; it is called once per written row band: 4-16 ms
a call while predicting a 8192² raster, against about 7 s of forward passes per band.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` (glibc), or None where it has none (macOS, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
