"""Image -> global descriptor, the one interface retrieval, eval, map building and the node use.

An encoder takes RGB uint8 images (H, W, 3) and returns float32 (N, dim)
L2-normalised descriptors, so inner product = cosine similarity everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

from structvpr_core.models.shipped import checkpoint_dirs, find_checkpoint  # no torch import
from structvpr_core.progress import progress
from structvpr_core.runtime.input_rule import InputRule

# Off-the-shelf ImageNet EfficientNet-Lite0, no VPR training: "imagenet-lite0" max-pools the
# last feature map (the 1280-channel head; the reference the trained students must beat),
# "imagenet-lite0-mc" applies StructVPR's MC head to stages 3-5 (472-d).
IMAGENET_LITE0_LEVELS = {"imagenet-lite0": (6,), "imagenet-lite0-mc": (3, 4, 5)}
# The same two descriptors of the larger EfficientNet-Lite2 (MC: 520-d).
IMAGENET_LITE2_LEVELS = {"imagenet-lite2": (6,), "imagenet-lite2-mc": (3, 4, 5)}
BASELINES = ("raw-pixel", "random-mobilenetv2", "imagenet-mobilenetv2", *IMAGENET_LITE0_LEVELS,
             *IMAGENET_LITE2_LEVELS)
DEFAULT_BASELINE_SIZE = (640, 480)
# Each network baseline's input rule, (pixels, second_pixels): a pixel budget at the image's aspect,
# two = multi-scale (the normalised sum of both descriptors), chosen on val by one rule for every
# model (benchmarks/input_budget.py, docs/input_budget.md: the cheapest within one Gardens Point val
# query of the best). random-mobilenetv2 was not swept: imagenet-mobilenetv2's rule (same network).
BASELINE_INPUT_PIXELS = {"random-mobilenetv2": (115200, 51200), "imagenet-mobilenetv2": (115200, 51200),
                         "imagenet-lite0": (115200, 12800), "imagenet-lite0-mc": (76800, 28800),
                         "imagenet-lite2": (115200, 51200), "imagenet-lite2-mc": (28800, 12800)}


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


def baseline_network(spec: str, size: tuple[int, int] = DEFAULT_BASELINE_SIZE, seed: int = 0):
    """A network baseline (``BASELINES`` but raw-pixel) as ``(RGBBranch, name)``: ``size`` is its
    config's input size (what training from it starts at), its input rule the pixel budget of
    ``BASELINE_INPUT_PIXELS``.

    imagenet-mobilenetv2: the paper's MC student (MobileNetV2, 448-d) with the ImageNet weights
    of the shared coral TFLite model, untrained for places.
    """
    import torch

    from structvpr_core.models.branches import ModelConfig, RGBBranch

    size = tuple(size)
    pixels, second = BASELINE_INPUT_PIXELS.get(spec, (0, 0))
    rule = dict(input_pixels=pixels, input_pixels_second=second)
    if spec == "random-mobilenetv2":
        torch.manual_seed(seed)  # the baseline must be the same network every run
        return RGBBranch(ModelConfig("rgb", size, **rule)), f"random-mobilenetv2-seed{seed}"
    if spec == "imagenet-mobilenetv2":
        model = RGBBranch(ModelConfig("rgb", size, padding="tf-same", **rule))
        model.load_imagenet("coral")
        return model, "imagenet-mobilenetv2-coral"
    for trunk, levels in (("efficientnet-lite0", IMAGENET_LITE0_LEVELS), ("efficientnet-lite2", IMAGENET_LITE2_LEVELS)):
        if spec in levels:
            model = RGBBranch(ModelConfig("rgb", size, mc_levels=levels[spec], trunk=trunk, **rule))
            model.load_imagenet()
            return model, spec
    raise ValueError(f"'{spec}' is not a network baseline {[b for b in BASELINES if b != 'raw-pixel']}")


def resolve_model(spec: str) -> str | Path:
    """A model name as every command and the node accept it: a baseline name as it is, else the
    checkpoint file it names (a path, or the bare file name of a shipped checkpoint, looked up in
    ``models.shipped.checkpoint_dirs``). ``FileNotFoundError`` naming the model otherwise."""
    if spec in BASELINES:
        return spec
    path = find_checkpoint(spec)
    if path is None or not path.is_file():
        where = ", ".join(str(d) for d in checkpoint_dirs())
        raise FileNotFoundError(f"model '{spec}' is neither a checkpoint file nor a baseline ({', '.join(BASELINES)}); "
                                f"a bare file name is looked up in {where}")
    return path


def load_encoder(spec: str, device: str = "auto", input_size: tuple[int, int] | None = None, seed: int = 0,
                 runtime: str = "auto", precision: str = "auto",
                 input_pixels: int | tuple[int, int] | None = None) -> Encoder:
    """``spec`` = a checkpoint (``resolve_model``), or a baseline name (``BASELINES``; see ``baseline_network``).

    The input rule is the model's own (a pixel budget, or a checkpoint's fixed training size) unless
    ``input_size`` (W, H) forces a size or ``input_pixels`` another budget (two: multi-scale).
    ``runtime`` / ``precision``: the network's inference path (structvpr_core.runtime.inference).
    """
    if input_size is not None and input_pixels is not None:
        raise ValueError("give input_size or input_pixels, not both")
    resolved = resolve_model(spec)
    if resolved == "raw-pixel":
        if input_size is not None or input_pixels is not None:
            raise ValueError("raw-pixel uses its own fixed 64x32 patch-normalised grid: no input size applies")
        return RawPixelEncoder()  # no torch import: it takes seconds and the baseline needs none
    from structvpr_core.models.checkpoint import load_checkpoint
    from structvpr_core.runtime.network import NetworkEncoder

    rule = None  # the model's own
    if input_size is not None:
        rule = InputRule(size=tuple(input_size))
    elif input_pixels is not None:
        pixels, second = input_pixels if isinstance(input_pixels, tuple) else (input_pixels, 0)
        rule = InputRule(pixels=pixels, second_pixels=second)
    if isinstance(resolved, str):
        model, name = baseline_network(resolved, seed=seed)
        return NetworkEncoder(model, name, device, rule, runtime, precision)
    model, payload = load_checkpoint(resolved, expect_branch="rgb")
    return NetworkEncoder(model, resolved.stem, device, rule, runtime, precision,
                          checkpoint=resolved, checkpoint_sha256=str(payload["sha256"]))


def encode_paths(encoder: Encoder, paths: Sequence[Path], batch_size: int = 32, desc: str = "encoding") -> np.ndarray:
    """Encode image files in batches with a progress bar."""
    from structvpr_core.data.images import read_rgb  # dataset helper (clear errors for unreadable files)

    out = np.empty((len(paths), encoder.dim), np.float32)
    for start in progress(range(0, len(paths), batch_size), desc=desc, unit="batch", leave=False):
        chunk = paths[start : start + batch_size]
        out[start : start + len(chunk)] = encoder.encode([read_rgb(p) for p in chunk])
    return out
