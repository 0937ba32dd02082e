"""Process-wide settings that keep a hub holding thousands of connections small.

Both are applied once, by ``hub serve``, before the event loop starts.
"""

from __future__ import annotations

import asyncio.sslproto
import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's default, here held fixed
TLS_READ_BUFFER = 16 * 1024  # bytes of ciphertext read from a TLS socket at a time


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


def shrink_tls_read_buffers() -> bool:
    """asyncio gives every TLS connection a 256 KiB read buffer, zero-filled when the
    connection is made (CPython's ``SSLProtocol.max_size``; python/cpython#109534): 278 KB of
    resident memory per idle mqtts/wss device. 16 KiB holds a whole TLS record; a bigger
    message is read in more pieces. Returns False if this Python has no such setting.
    """
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    if protocol is None or not isinstance(getattr(protocol, "max_size", None), int):
        return False
    protocol.max_size = min(protocol.max_size, TLS_READ_BUFFER)
    return True


def apply() -> None:
    """Both settings; ``hub serve`` calls this before its event loop starts."""
    keep_big_blocks_out_of_the_heap()
    shrink_tls_read_buffers()
