"""Keep a long mapping run's memory proportional to its map (glibc heap fragmentation).

Each keyframe stores ~136 KiB of local features for the life of the map, while every query
allocates and frees temporaries that grow with the map (similarity rows, sequence scores,
matching matrices). glibc raises its mmap threshold dynamically after large frees, so those
arrays end up interleaved on the heap and the holes between long-lived features are never
reused: at the shipped defaults the node's RSS grew ~580 KB per keyframe in an 8-minute soak,
against ~180 KB that the map itself holds (benchmarks/README.md, soak.py). A fixed threshold
sends every allocation of 64 KiB and more to its own mapping, returned to the system on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024


def pin_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (which also stops its dynamic adjustment); False where the C
    library has no ``mallopt`` (musl, macOS) and nothing changed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)) == 1)
