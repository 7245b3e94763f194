"""Reading images from disk: one RGB loader and a torch Dataset over a list of paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (grey and RGBA files are converted).

    Raises FileNotFoundError for a missing file and ValueError for an empty, corrupt or
    non-image file, both naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    # np.fromfile + imdecode instead of cv2.imread: works for non-ASCII paths and lets
    # us tell "missing" from "unreadable" (imread returns None for both).
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"image file is empty: {path}")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image (corrupt or not an image): {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


class ImageFolderDataset(Dataset):
    """Images from a list of paths; item i is ``(transform(read_rgb(paths[i])), i)``.

    The index comes back with the tensor so descriptors computed by a DataLoader can be
    written to the right row whatever the batching.
    """

    def __init__(self, paths: Sequence[str | Path],
                 transform: Callable[[np.ndarray], torch.Tensor] = rgb_to_tensor):
        self.paths = [Path(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_rgb(self.paths[index])), index
