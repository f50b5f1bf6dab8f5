"""Keep freed heap memory inside the process, so a CPU update stops page-faulting its working set back in.

An update allocates and frees megabytes of activations on every call (a [1280, 256] fp32 activation of the T = 5
chain is 1.3 MB). With glibc's default malloc settings, freed blocks above its adaptive thresholds go back to the
kernel (munmap, or a trim of the heap's top), so the next update's allocations are fresh pages and the first write
to each page is a page fault: at HalfCheetah dims (T = 5, batch 256) 1,000-5,000 faults on every policy update,
against none once the blocks are kept (tests/train/test_host_memory.py). What that costs depends on what the process
allocated before; in a plain `dacer2-train` run it was 6-9% of the fp32 update phase and within the noise of the
bf16 one on a 2-core AMD EPYC (benchmarks/test_bench_host_memory.py, docs/performance.md "Host memory").

The settings: serve every block up to glibc's largest mmap threshold (32 MiB) from the heap, and return the heap's
free top to the kernel only above 1 GiB. Peak resident memory stays what it was: the same blocks are reused, only
no longer handed back and faulted in again. Other allocators (macOS, musl, jemalloc preloaded) are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30


@functools.lru_cache(maxsize=None)
def glibc() -> ctypes.CDLL | None:
    """The process's glibc (for mallopt and malloc_trim), or None under another C library or OS."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the C library it actually runs on
        libc.gnu_get_libc_version  # noqa: B018  (AttributeError on musl and other C libraries)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> str:
    """Set glibc malloc's thresholds so freed blocks stay in the process; idempotent, process-wide.

    Returns one line saying what was done, for the run's records."""
    libc = glibc()
    if libc is None:
        return "unchanged (not glibc malloc)"
    # mallopt returns 1 on success; setting either threshold also turns off glibc's adaptive adjustment of both,
    # which is why both are set.
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "unchanged (glibc refused the thresholds)"
    return "glibc malloc keeps freed blocks (mmap threshold 32 MiB, trim threshold 1 GiB)"
