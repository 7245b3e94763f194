"""One thread setting for torch, faiss and OpenCV (structvpr_core.runtime.threads)."""

import threading

import cv2
import faiss
import numpy as np
import pytest
import torch

from structvpr_core.retrieval.index import DescriptorIndex
from structvpr_core.runtime import threads


def test_one_setting_holds_in_a_worker_through_index_build_load_and_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_compute_threads", None)  # restored after the test
    before = (torch.get_num_threads(), cv2.getNumThreads())
    seen = {}

    def worker():  # like the node's worker: OpenMP counts are per thread
        threads.apply_in_this_thread()
        desc = np.eye(8, dtype=np.float32)
        index = DescriptorIndex(8)
        index.add(desc, np.arange(8))
        index.save(tmp_path / "index.faiss")
        loaded = DescriptorIndex.load(tmp_path / "index.faiss")
        torch.nn.functional.conv2d(torch.ones(1, 3, 64, 64), torch.ones(4, 3, 3, 3))  # torch's first op here
        loaded.search(desc[:1], 1)
        seen.update(faiss=faiss.omp_get_max_threads(), torch=torch.get_num_threads(), cv2=cv2.getNumThreads())

    try:
        threads.set_compute_threads(3)  # not a default of any of them, so the check is not by chance
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
        faiss.omp_set_num_threads(before[0])
    assert seen == {"faiss": 3, "torch": 3, "cv2": 3}


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="threads must be in 1.."):
        threads.set_compute_threads(0)
    with pytest.raises(ValueError, match=r"threads must be in 1..\d+ \(4x this machine's cores\), got 100000"):
        threads.set_compute_threads(100_000)  # made torch segfault in its first convolution (issue 20)


def test_the_mmap_threshold_is_pinned_on_glibc():
    """The node pins glibc's mmap threshold at start (runtime/memory.py); on this Linux it must apply."""
    import platform

    from structvpr_core.runtime.memory import pin_mmap_threshold

    assert pin_mmap_threshold() is (platform.libc_ver()[0] == "glibc")
