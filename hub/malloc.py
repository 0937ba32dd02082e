"""Heap tuning for the hub's long-running process (glibc's malloc; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's default, here held fixed


def keep_big_blocks_out_of_the_heap() -> bool:
    """Blocks of 128 KB or more are mapped and unmapped on their own, never kept in the heap.

    A device's first CONNECT checks its secret with scrypt, which works in 4 MB. glibc raises
    its mmap threshold after such a block is freed, so from then on every worker thread's 4 MB
    stays in its heap, between the small objects of connections made meanwhile: at 5,000
    connections that is about 6 KB of resident memory per connection (BENCHMARKS.md). Setting
    the threshold explicitly turns that adjustment off. Returns False where there is no
    glibc ``mallopt`` (musl, macOS): nothing changes there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("mallopt(M_MMAP_THRESHOLD, %d): %s", MMAP_THRESHOLD, ok)
    return ok
