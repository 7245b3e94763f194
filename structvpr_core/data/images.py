"""Reading images from disk: one RGB loader with clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (grey and RGBA files are converted).

    Raises FileNotFoundError for a missing file and ValueError for an unreadable (permissions,
    I/O error), empty, corrupt or non-image file, both naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    # np.fromfile + imdecode instead of cv2.imread: works for non-ASCII paths and lets
    # us tell "missing" from "unreadable" (imread returns None for both).
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:  # e.g. mode 000: a PermissionError traceback named no file the user gave
        raise ValueError(f"cannot read image file {path}: {e.strerror or e}") from None
    if data.size == 0:
        raise ValueError(f"image file is empty: {path}")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image (corrupt or not an image): {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
