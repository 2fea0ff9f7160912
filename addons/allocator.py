"""The C allocator's settings for a long-running sidecar (glibc).

glibc serves large allocations (128 KiB and up by default) with ``mmap`` and returns them to the
system when freed, but each such free *raises* the threshold (up to 32 MiB) so that later large
blocks come from the heap instead, where the holes they leave are rarely given back. A bounded
store that keeps rebuilding a big table (the throttle's bucket map, its hash table rebuilt as
evicted entries fill it) then makes the process grow in steps although its data does not: in the
benchmark, +15 MB over 1,000,000 distinct clients at a bound of 100,000 buckets. Fixing the
threshold keeps large blocks on ``mmap``, returned when freed, and memory flat (+0 MB from the
first rebuild to 4,000,000 clients; see bench/README.md).

The values: every socket read of asyncio's transports allocates a 256 KiB buffer and then shrinks
it, so the mmap threshold is 512 KiB (at 128 KiB, fixed, each read would be an ``mmap``/``munmap``
pair) and the trim threshold twice that, as glibc's own adjustment would set it (left at 128 KiB,
the heap's top would be given back and taken again on every read). A loop of 200-byte ``recv``
calls here: 14.6 µs each with glibc's defaults, 15.1 µs at 128 KiB, 9.7 µs at 512 KiB alone,
2.5 µs at 512 KiB with the 1 MiB trim threshold.

Other C libraries (musl) lack ``mallopt``; sidegate then runs with their defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("sidegate")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters; setting them turns the dynamic adjustment off
M_MMAP_THRESHOLD = -3
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
        # The trim threshold as glibc's own adjustment would set it (twice the mmap threshold):
        # left at its 128 KiB default, the heap's top would be given back and taken again per read.
        ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD))
    except (OSError, TypeError, ValueError):
        return False
    if not ok:
        log.debug("sidegate: mallopt(M_MMAP_THRESHOLD) refused; allocator defaults kept")
    return ok
