"""The hub's heap tuning takes effect on glibc and is harmless elsewhere."""

from __future__ import annotations

import platform

from hub.malloc import keep_big_blocks_out_of_the_heap


def test_mmap_threshold_is_fixed_on_glibc() -> None:
    applied = keep_big_blocks_out_of_the_heap()
    if platform.libc_ver()[0] == "glibc":
        assert applied, "glibc's mallopt refused M_MMAP_THRESHOLD"
    else:
        assert applied is False
