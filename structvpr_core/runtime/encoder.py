"""Image -> global descriptor, the one interface retrieval, eval, map building and the node use.

An encoder takes RGB uint8 images (H, W, 3) and returns float32 (N, dim)
L2-normalised descriptors, so inner product = cosine similarity everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

from structvpr_core.models.shipped import find_checkpoint  # no torch import
from structvpr_core.progress import progress

# Off-the-shelf ImageNet EfficientNet-Lite0, no VPR training: "imagenet-lite0" max-pools the
# last feature map (the 1280-channel head; the reference the trained students must beat),
# "imagenet-lite0-mc" applies StructVPR's MC head to stages 3-5 (472-d).
IMAGENET_LITE0_LEVELS = {"imagenet-lite0": (6,), "imagenet-lite0-mc": (3, 4, 5)}
BASELINES = ("raw-pixel", "random-mobilenetv2", "imagenet-mobilenetv2", *IMAGENET_LITE0_LEVELS)
DEFAULT_BASELINE_SIZE = (640, 480)


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


class RawPixelEncoder:
    """SeqSLAM-style baseline: grey, downsampled, patch-normalised pixels."""

    def __init__(self, size: tuple[int, int] = (64, 32), patch: int = 8):
        if size[0] % patch or size[1] % patch:
            raise ValueError(f"size {size} must be a multiple of patch {patch}")
        self.size, self.patch = tuple(size), patch
        self.name = f"raw-pixel-{size[0]}x{size[1]}-p{patch}"
        self.dim = size[0] * size[1]

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(images), self.dim), np.float32)
        w, h, p = *self.size, self.patch
        for i, img in enumerate(images):
            grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            small = cv2.resize(grey, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
            patches = small.reshape(h // p, p, w // p, p)
            mean = patches.mean(axis=(1, 3), keepdims=True)
            std = patches.std(axis=(1, 3), keepdims=True)
            out[i] = ((patches - mean) / (std + 1e-6)).reshape(-1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def baseline_network(spec: str, size: tuple[int, int], seed: int = 0):
    """A network baseline (``BASELINES`` but raw-pixel) as ``(RGBBranch at size, name)``.

    imagenet-mobilenetv2: the paper's MC student (MobileNetV2, 448-d) with the ImageNet weights
    of the shared coral TFLite model, untrained for places.
    """
    import torch

    from structvpr_core.models.branches import ModelConfig, RGBBranch

    size = tuple(size)
    if spec == "random-mobilenetv2":
        torch.manual_seed(seed)  # the baseline must be the same network every run
        return RGBBranch(ModelConfig("rgb", size)), f"random-mobilenetv2-seed{seed}"
    if spec == "imagenet-mobilenetv2":
        model = RGBBranch(ModelConfig("rgb", size, padding="tf-same"))
        model.load_imagenet("coral")
        return model, "imagenet-mobilenetv2-coral"
    if spec in IMAGENET_LITE0_LEVELS:
        model = RGBBranch(ModelConfig("rgb", size, mc_levels=IMAGENET_LITE0_LEVELS[spec], trunk="efficientnet-lite0"))
        model.load_imagenet()
        return model, spec
    raise ValueError(f"'{spec}' is not a network baseline {[b for b in BASELINES if b != 'raw-pixel']}")


def load_encoder(spec: str, device: str = "auto", input_size: tuple[int, int] | None = None, seed: int = 0,
                 runtime: str = "auto", precision: str = "auto") -> Encoder:
    """``spec`` = a checkpoint path, or a baseline name (``BASELINES``; see ``baseline_network``).

    ``runtime`` / ``precision``: the network's inference path (structvpr_core.runtime.inference).
    """
    if spec == "raw-pixel":
        return RawPixelEncoder()  # no torch import: it takes seconds and the baseline needs none
    from structvpr_core.models.checkpoint import load_checkpoint
    from structvpr_core.runtime.network import NetworkEncoder

    if spec in BASELINES:
        size = tuple(input_size or DEFAULT_BASELINE_SIZE)
        model, name = baseline_network(spec, size, seed)
    else:
        path = find_checkpoint(spec)
        if path is None:
            raise FileNotFoundError(f"model '{spec}' is neither a checkpoint file nor a baseline {list(BASELINES)}")
        model, _ = load_checkpoint(path, expect_branch="rgb")
        name, size = path.stem, input_size  # None: the checkpoint's own training size
    return NetworkEncoder(model, name, device, size, runtime, precision)


def encode_paths(encoder: Encoder, paths: Sequence[Path], batch_size: int = 32, desc: str = "encoding") -> np.ndarray:
    """Encode image files in batches with a progress bar."""
    from structvpr_core.data.images import read_rgb  # dataset helper (clear errors for unreadable files)

    out = np.empty((len(paths), encoder.dim), np.float32)
    for start in progress(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        chunk = paths[start : start + batch_size]
        out[start : start + len(chunk)] = encoder.encode([read_rgb(p) for p in chunk])
    return out
