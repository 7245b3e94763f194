"""Local features of image files, extracted once and cached on disk (missions, re-ranking benchmark).

The cache key is the image list plus what the features depend on: the extractor's settings
and the source of the local-feature modules and the XFeat network, so a change there never
reads stale features. One .npz per image list (concatenated arrays + offsets, no pickle).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from structvpr_core.data.images import read_rgb
from structvpr_core.io_utils import atomic_write
from structvpr_core.loop_closure.geometry import GeometryConfig
from structvpr_core.loop_closure.local_features import FeatureExtractor, LocalFeatures
from structvpr_core.progress import progress

LOCAL_FEATURE_SOURCES = ("local_features.py", "xfeat_features.py")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def features_key(geometry: GeometryConfig) -> str:
    """What extracted local features depend on: the extractor's settings and source (and XFeat's network)."""
    g = geometry
    h = hashlib.sha256(f"{g.features}|{g.max_features}|{g.max_image_width}|{g.min_image_width}|{g.min_image_pixels}".encode())
    for name in LOCAL_FEATURE_SOURCES:
        h.update((PACKAGE_ROOT / "loop_closure" / name).read_bytes())
    h.update((PACKAGE_ROOT / "models" / "xfeat.py").read_bytes())
    return h.hexdigest()[:16]


def cached_features(paths: list[Path], geometry: GeometryConfig, cache_dir: Path | None,
                    label: str = "") -> list[LocalFeatures]:
    """Local features of every image, from one .npz per (image list, extractor) when cached."""
    kind = geometry.features
    key = hashlib.sha256("\n".join([features_key(geometry), *map(str, paths)]).encode()).hexdigest()[:24]
    cache_file = None if cache_dir is None else cache_dir / f"features_{key}.npz"
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:  # each z[key] reads the whole array again: once
            keypoints, descriptors, offsets, sizes = (z[k] for k in ("keypoints", "descriptors", "offsets", "sizes"))
        return [LocalFeatures(keypoints[a:b], descriptors[a:b], tuple(int(v) for v in sizes[i]), kind)
                for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))]
    extractor = FeatureExtractor.from_config(geometry)
    out = [extractor(read_rgb(p)) for p in progress(paths, desc=f"local features {label}".strip(), unit="img")]
    if cache_file is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(f) for f in out])
        arrays = {"keypoints": np.concatenate([f.keypoints for f in out]),
                  "descriptors": np.concatenate([f.descriptors for f in out]),
                  "offsets": offsets, "sizes": np.array([f.image_size for f in out], np.int64)}
        atomic_write(cache_file, lambda tmp: _savez(tmp, arrays))
    return out


def _savez(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:  # np.savez on a path would append .npz to the temporary name
        np.savez(f, **arrays)
