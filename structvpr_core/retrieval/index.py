"""Nearest-neighbour search over L2-normalised global descriptors (faiss).

``DescriptorIndex`` wraps a faiss index in ``IndexIDMap2`` so every vector carries
a caller-chosen int64 id (a map database keeps its own per-id metadata and only
asks the index for ids). Descriptors are L2-normalised, so inner product = cosine
similarity and a higher score is a better match.

Kinds:
- ``flat``: ``IndexFlatIP``, exact search. Right for maps up to ~1e5 images.
- ``ivfpq``: ``IndexIVFPQ`` (inner product), approximate and compressed; must be
  ``train()``-ed on representative descriptors before ``add()``.

File format (``save``/``load``): a one-line header ``structvpr-faiss/1 <sha256>``
followed by ``faiss.serialize_index`` bytes. The hash lets ``load`` reject a
truncated or corrupted file instead of returning a silently wrong index
(faiss itself happily reads flipped bytes inside the vector data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from structvpr_core.config import ConfigError
from structvpr_core.io_utils import atomic_write_bytes

FILE_MAGIC = b"structvpr-faiss/1"
# |norm - 1| above this means the caller forgot to L2-normalise
NORM_TOLERANCE = 1e-3


@dataclass
class IndexConfig:
    kind: Literal["flat", "ivfpq"] = "flat"
    # ivfpq only: number of coarse cells, PQ sub-quantizers (must divide dim; 0 = about dim / 4,
    # 4 dims per code: dim / 8 lost 6 R@1 points on real 472-d descriptors, benchmarks/README.md),
    # bits per sub-quantizer code, and cells visited per query
    nlist: int = 64
    m: int = 0
    nbits: int = 8
    nprobe: int = 8

    def __post_init__(self):
        if self.kind not in ("flat", "ivfpq"):
            raise ConfigError(f"index kind must be 'flat' or 'ivfpq', got '{self.kind}'")
        for name in ("nlist", "nbits", "nprobe"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index {name} must be >= 1, got {getattr(self, name)}")
        if self.m < 0:
            raise ConfigError(f"index m must be >= 1 (or 0 = dim / 4), got {self.m}")
        if self.nbits > 16:
            raise ConfigError(f"index nbits must be <= 16, got {self.nbits}")
        if self.nprobe > self.nlist:
            raise ConfigError(f"index nprobe ({self.nprobe}) cannot exceed nlist ({self.nlist})")

    @property
    def min_train_vectors(self) -> int:
        # k-means needs at least one point per centroid, for the coarse cells and the PQ codebooks
        return max(self.nlist, 2**self.nbits)

    def for_dim(self, dim: int) -> "IndexConfig":
        """This config for ``dim``-d descriptors: ``m`` = 0 resolved, ``m`` checked to divide ``dim``."""
        if self.kind != "ivfpq":
            return self
        # m = 0: the largest divisor of dim up to dim / 4 (dim / 4 itself when 4 divides dim)
        m = self.m or max(d for d in range(1, max(dim // 4, 1) + 1) if dim % d == 0)
        if dim % m:
            raise ConfigError(f"ivfpq: m={m} sub-quantizers must divide the descriptor dim {dim}")
        return replace(self, m=m)


class DescriptorIndex:
    def __init__(self, dim: int, config: IndexConfig | None = None, normalize: bool = False):
        """``normalize=True`` L2-normalises inputs instead of rejecting unnormalised ones."""
        if dim < 1:
            raise ValueError(f"descriptor dim must be >= 1, got {dim}")
        self.config = (config or IndexConfig()).for_dim(dim)
        # no faiss thread setting here: structvpr_core.runtime.threads owns it (per calling thread)
        self.normalize = normalize
        self._index = faiss.IndexIDMap2(self._make_inner(dim))
        self._ids: set[int] = set()

    def _make_inner(self, dim: int) -> faiss.Index:
        if self.config.kind == "flat":
            return faiss.IndexFlatIP(dim)
        # faiss's Python wrapper keeps the quantizer alive as long as the IVF index
        ivf = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, self.config.nlist, self.config.m, self.config.nbits, faiss.METRIC_INNER_PRODUCT
        )
        ivf.nprobe = self.config.nprobe
        return ivf

    # --- properties -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._index.d

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def __len__(self) -> int:
        return self._index.ntotal

    def __contains__(self, item_id: int) -> bool:
        return int(item_id) in self._ids

    def ids(self) -> np.ndarray:
        """All stored ids (int64), in storage order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def flat_vectors(self) -> np.ndarray:
        """(N, dim) stored descriptors in storage order: a read-only view of faiss's memory, no copy.

        Flat index only (ivfpq keeps compressed codes, not the descriptors). The view is
        valid until the next ``add``/``remove``: use it at once, under the caller's lock.
        """
        if self.kind != "flat":
            raise ValueError(f"only the flat index keeps the exact descriptors, this one is '{self.kind}'")
        inner = faiss.downcast_index(self._index.index)
        n = self._index.ntotal
        view = faiss.rev_swig_ptr(inner.get_xb(), n * self.dim).reshape(n, self.dim)
        view.flags.writeable = False
        return view

    # --- building ---------------------------------------------------------------------
    def train(self, desc: np.ndarray) -> None:
        """Fit the ivfpq coarse quantizer and PQ codebooks (no-op for 'flat')."""
        desc = self._check_vectors(desc, "training descriptors")
        if self.kind == "flat":
            return
        if len(desc) < self.config.min_train_vectors:
            raise ValueError(
                f"ivfpq needs at least {self.config.min_train_vectors} training vectors "
                f"(nlist={self.config.nlist}, 2**nbits={2 ** self.config.nbits}), got {len(desc)}; "
                f"use kind 'flat' or smaller nlist/nbits"
            )
        self._index.train(desc)

    def add(self, desc: np.ndarray, ids) -> None:
        desc = self._check_vectors(desc, "descriptors")
        ids = self._check_ids(ids, len(desc))
        if not self.is_trained:
            raise ValueError("ivfpq index is not trained: call train() with representative descriptors first")
        clash = [int(i) for i in ids if int(i) in self._ids]
        if clash:
            raise ValueError(f"ids already in the index: {clash[:10]}{' ...' if len(clash) > 10 else ''}")
        self._index.add_with_ids(desc, ids)
        self._ids.update(int(i) for i in ids)

    def remove(self, ids) -> None:
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        missing = [int(i) for i in ids if int(i) not in self._ids]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        self._index.remove_ids(ids)
        self._ids.difference_update(int(i) for i in ids)

    # --- querying ---------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine similarity: ``(scores float32 (Q,k), ids int64 (Q,k))``, best first.

        When the index holds fewer than ``k`` vectors (or ivfpq's probed cells do),
        the missing slots have id -1 and score -inf.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._check_vectors(queries, "queries")
        if not self.is_trained:
            raise ValueError("ivfpq index is not trained: call train() first")
        scores, ids = self._index.search(queries, k)
        scores[ids < 0] = -np.inf  # faiss pads with -FLT_MAX; -inf makes "no result" unmistakable
        return scores.astype(np.float32), ids.astype(np.int64)

    # --- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        payload = faiss.serialize_index(self._index).tobytes()
        header = FILE_MAGIC + b" " + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        return atomic_write_bytes(path, header + payload)

    @classmethod
    def load(cls, path: str | Path, normalize: bool = False) -> "DescriptorIndex":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"descriptor index not found: {path}")
        data = path.read_bytes()
        header, sep, payload = data.partition(b"\n")
        parts = header.split(b" ")
        if not sep or len(parts) != 2 or parts[0] != FILE_MAGIC:
            raise ValueError(f"{path}: not a StructVPR descriptor index (missing '{FILE_MAGIC.decode()}' header)")
        if hashlib.sha256(payload).hexdigest().encode() != parts[1]:
            raise ValueError(f"{path}: descriptor index is corrupt or truncated (content hash mismatch)")
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as e:
            raise ValueError(f"{path}: faiss cannot read the descriptor index ({str(e).splitlines()[0][:200]})") from None
        return cls._from_faiss(index, path, normalize)

    @classmethod
    def _from_faiss(cls, raw: faiss.Index, path: Path, normalize: bool) -> "DescriptorIndex":
        index = faiss.downcast_index(raw)
        # the downcast proxy must own the C++ object, else it is freed together with `raw`
        raw.thisown, index.thisown = False, True
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"{path}: expected an id-mapped faiss index, got {type(index).__name__}")
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexFlatIP):
            config = IndexConfig("flat")
        elif isinstance(inner, faiss.IndexIVFPQ) and inner.metric_type == faiss.METRIC_INNER_PRODUCT:
            config = IndexConfig("ivfpq", nlist=inner.nlist, m=inner.pq.M, nbits=inner.pq.nbits, nprobe=inner.nprobe)
        else:
            raise ValueError(f"{path}: unsupported inner index {type(inner).__name__} (expected flat IP or IVFPQ IP)")
        obj = cls.__new__(cls)
        obj.config, obj.normalize = config, normalize
        obj._index = index
        obj._ids = set(obj.ids().tolist())
        return obj

    # --- validation -------------------------------------------------------------------
    def _check_vectors(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{what}: expected shape (N, {self.dim}), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{what}: expected float descriptors, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"{what}: contain NaN or infinite values")
        norms = np.linalg.norm(x, axis=1)
        if self.normalize:
            if (norms < 1e-12).any():
                raise ValueError(f"{what}: zero vector(s) cannot be normalised (rows {np.flatnonzero(norms < 1e-12)[:10].tolist()})")
            return x / norms[:, None]
        bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
        if bad.size:
            raise ValueError(
                f"{what}: {bad.size} row(s) not L2-normalised (e.g. row {bad[0]} has norm {norms[bad[0]]:.4f}); "
                f"normalise them or create the index with normalize=True"
            )
        return x

    @staticmethod
    def _check_ids(ids, n: int) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(ids))
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(f"ids: expected {n} ids for {n} descriptors, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise ValueError("ids must be >= 0 (-1 marks 'no result' in search output)")
        uniq, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate ids in one add(): {uniq[counts > 1][:10].tolist()}")
        return arr
