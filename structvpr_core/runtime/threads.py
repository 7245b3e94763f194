"""The one place that sets how many threads inference, map queries and image ops use.

torch, faiss and OpenCV each keep their own thread count (torch and faiss even load
separate OpenMP runtimes), and OpenMP's count is per calling thread. So a process
calls ``set_compute_threads`` once and every thread that encodes or queries calls
``apply_in_this_thread`` before its first call.

Why 1 by default on the robot: on 2 cores shared with SLAM, 2 OpenMP threads made
MobileNetV2 20x slower than 1 (every layer waits at a barrier for the thread without a
core) and a 1000-keyframe faiss query took 7.0 ms against 0.05 ms (issue 9,
benchmarks/README.md).
"""

from __future__ import annotations

import os
import sys

import cv2
import faiss

_compute_threads: int | None = None  # None: libraries' own defaults


def max_threads() -> int:
    """Most threads a thread-count setting may ask for: 4x the machine's cores.

    More than the cores already only waits at OpenMP barriers (tests oversubscribe on purpose);
    100000 grew memory ~70 MB/s and made torch segfault in its first convolution (issue 20).
    """
    return 4 * (os.cpu_count() or 1)


def set_compute_threads(threads: int) -> None:
    """Use ``threads`` (>= 1) for torch, ONNX Runtime sessions made later, faiss and OpenCV."""
    global _compute_threads
    if not 1 <= threads <= max_threads():
        raise ValueError(f"threads must be in 1..{max_threads()} (4x this machine's cores), got {threads}")
    _compute_threads = threads
    cv2.setNumThreads(threads)  # process-wide
    apply_in_this_thread()


def compute_threads() -> int | None:
    """The count ``set_compute_threads`` chose, None when nobody chose one."""
    return _compute_threads


def apply_in_this_thread() -> None:
    """Apply the chosen count to the calling thread's OpenMP state (torch's and faiss's)."""
    if _compute_threads is None:
        return
    faiss.omp_set_num_threads(_compute_threads)
    torch = sys.modules.get("torch")  # raw-pixel never imports torch; do not load it for this
    if torch is not None:
        # also the count torch re-applies in each new thread at its first op
        torch.set_num_threads(_compute_threads)
