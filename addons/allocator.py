"""The C allocator's settings for a long-running sidecar (glibc).

glibc serves large allocations (128 KiB and up by default) with ``mmap`` and returns them to the
system when freed, but each such free *raises* the threshold (up to 32 MiB) so that later large
blocks come from the heap instead, where the holes they leave are rarely given back. A bounded
store that keeps rebuilding a big table (the throttle's bucket map, its hash table rebuilt as
evicted entries fill it) then makes the process grow in steps although its data does not: in the
benchmark, +15 MB over 1,000,000 distinct clients at a bound of 100,000 buckets. Fixing the
threshold keeps large blocks on ``mmap``, returned when freed, and memory flat (+0 MB from the
first rebuild to 4,000,000 clients; see bench/README.md).

The value, 512 KiB: every socket read of asyncio's transports allocates a 256 KiB buffer and then
shrinks it; below the threshold that stays a cheap heap allocation. At glibc's default of 128 KiB,
fixed, each read would be an ``mmap``/``munmap`` pair (a loop of 200-byte ``recv`` calls here: 15.1
µs each at 128 KiB, 14.6 µs with glibc's defaults, 9.7 µs at 512 KiB).

Other C libraries (musl) lack ``mallopt``; sidegate then runs with their defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("sidegate")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it also turns the dynamic adjustment off
MMAP_THRESHOLD = 512 * 1024  # fixed: above asyncio's 256 KiB socket reads, below the big tables


def tune_allocator(libc: object | None = None) -> bool:
    """Fix glibc's mmap threshold; True when it was set (False elsewhere: not Linux, not glibc)."""
    if libc is None:
        if not sys.platform.startswith("linux"):
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    try:
        ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, TypeError, ValueError):
        return False
    if not ok:
        log.debug("sidegate: mallopt(M_MMAP_THRESHOLD) refused; allocator defaults kept")
    return ok
