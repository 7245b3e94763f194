"""Image sequences for the offline tools (``build-map``, ``make-bag``): frames in order, poses, stamps.

- A folder of images, ordered by the trailing frame number of their names
  (``images-01500.png``) or by name when names carry no number.
- Optionally a poses CSV, which then defines the images and their order. Header:
  ``image,x,y`` required; optional ``z``; orientation either ``qx,qy,qz,qw`` (all four)
  or ``heading`` (degrees, yaw about +z, as in ``structvpr_core.data.datasets`` CSVs);
  optional ``stamp`` (seconds). Image paths are relative to the images folder.
- ``nordland_poses``: Nordland has no metric poses, so the pose of frame N is
  x = N (in frame-number units), y = z = 0. Nordland's 35,768 frames per season
  cover the 728 km route at 1 frame/s, so one unit is ~20 m on average (the train
  speed varies and it stops at stations: the unit is not a fixed metric distance).
  With these poses a ground-truth radius of 10 equals the data set's soft tolerance
  (one neighbouring nordland64 file each side) and a radius of 0 the exact frame.
- ``frame_range=(a, b)`` keeps frames whose number is in [a, b] (inclusive).
- Stamps: the CSV's when every row has one (they must increase), else
  ``start + i / rate`` (``sequence_stamps_ns``).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structvpr_core.data.datasets import IMAGE_SUFFIXES, parse_csv_float

# Stamps when the data has none: a fixed, recognisable origin (2023-11-14 22:13:20 UTC)
# and frame rate, shared by make-bag and build-map so both give the same stamps.
DEFAULT_START_S = 1_700_000_000.0
DEFAULT_RATE_HZ = 10.0
IDENTITY_QUATERNION = (0.0, 0.0, 0.0, 1.0)
_TRAILING_INT = re.compile(r"(\d+)$")


@dataclass
class Frame:
    path: Path
    number: int | None  # trailing integer of the file name (Nordland frame number)
    pose: np.ndarray | None  # (7,) x y z qx qy qz qw
    stamp_s: float | None  # from the poses CSV, when it has a stamp column



def frame_number(path: Path) -> int | None:
    match = _TRAILING_INT.search(path.stem)
    return int(match.group(1)) if match else None


def load_sequence(images: str | Path, poses_csv: str | Path | None = None, nordland_poses: bool = False,
                  frame_range: tuple[int, int] | None = None) -> list[Frame]:
    """The frames of an image folder (or of a poses CSV) in sequence order."""
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder not found: {images}")
    if poses_csv is not None and nordland_poses:
        raise ValueError("give either a poses CSV or --nordland-poses, not both")
    if poses_csv is not None:
        frames = _read_poses_csv(Path(poses_csv), images)
    else:
        paths = [p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
        numbers = [frame_number(p) for p in paths]
        if None in numbers:
            order = sorted(range(len(paths)), key=lambda i: paths[i].name)
        else:
            order = sorted(range(len(paths)), key=lambda i: numbers[i])
            for a, b in zip(order, order[1:]):
                if numbers[a] == numbers[b]:
                    raise ValueError(f"{images}: {paths[a].name} and {paths[b].name} have the same frame number; "
                                     "rename them or give a poses CSV")
        frames = [Frame(paths[i], numbers[i], None, None) for i in order]
    if nordland_poses:
        for f in frames:
            if f.number is None:
                raise ValueError(f"--nordland-poses needs frame numbers in the file names, {f.path.name} has none")
            f.pose = np.array([f.number, 0.0, 0.0, *IDENTITY_QUATERNION])
    if frame_range is not None:
        unnumbered = [f.path.name for f in frames if f.number is None]
        if unnumbered:
            raise ValueError(f"a frame range needs frame numbers in the file names, {unnumbered[0]} has none")
        frames = [f for f in frames if frame_range[0] <= f.number <= frame_range[1]]
        if not frames:
            raise ValueError(f"no frames of {images} in the frame range {frame_range[0]}:{frame_range[1]}")
    return frames


def sequence_stamps_ns(frames: list[Frame], rate_hz: float, start_s: float) -> np.ndarray:
    """The poses CSV's stamps when every frame has one, else ``start + i / rate``."""
    if not frames or any(f.stamp_s is None for f in frames):
        return synthetic_stamps_ns(len(frames), rate_hz, start_s)
    stamps = np.array([round(f.stamp_s * 1e9) for f in frames], np.int64)
    bad = np.flatnonzero(np.diff(stamps) <= 0)
    if bad.size:
        raise ValueError(f"poses CSV stamps must increase: {frames[bad[0] + 1].path.name} is not later "
                         f"than {frames[bad[0]].path.name}")
    if stamps[0] < 0:
        raise ValueError(f"poses CSV stamps must be >= 0 seconds, got {frames[0].stamp_s}")
    return stamps


def synthetic_stamps_ns(count: int, rate_hz: float, start_s: float) -> np.ndarray:
    """start + i / rate, in integer nanoseconds."""
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"rate must be a positive number of Hz, got {rate_hz}")
    if not (start_s >= 0 and math.isfinite(start_s)):
        raise ValueError(f"start stamp must be >= 0 seconds, got {start_s}")
    return round(start_s * 1e9) + np.round(np.arange(count) * (1e9 / rate_hz)).astype(np.int64)


def yaw_to_quaternion(heading_deg: float) -> tuple[float, float, float, float]:
    half = math.radians(heading_deg) / 2
    return (0.0, 0.0, math.sin(half), math.cos(half))


def _read_poses_csv(path: Path, images: Path) -> list[Frame]:
    if not path.is_file():
        raise FileNotFoundError(f"poses CSV not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("image", "x", "y") if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        quat_cols = [c for c in ("qx", "qy", "qz", "qw") if c in header]
        if quat_cols and len(quat_cols) != 4:
            raise ValueError(f"{path}: orientation needs all of qx,qy,qz,qw, found only {quat_cols}")
        frames = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or None in row.values():
                raise ValueError(f"{where}: expected {len(header)} fields as in the header")
            if quat_cols:
                q = np.array([_number(row, c, where) for c in quat_cols])
                norm = np.linalg.norm(q)
                if abs(norm - 1) > 1e-3:
                    raise ValueError(f"{where}: quaternion {q.tolist()} is not unit length (norm {norm:.4f})")
                q /= norm
            else:
                q = np.array(yaw_to_quaternion(_number(row, "heading", where, default=0.0)))
            image = images / row["image"].strip()
            if not image.is_file():
                raise FileNotFoundError(f"{where}: image not found: {image}")
            position = [_number(row, "x", where), _number(row, "y", where), _number(row, "z", where, default=0.0)]
            stamp = _number(row, "stamp", where, default=math.nan)
            frames.append(Frame(image, frame_number(image), np.array([*position, *q]),
                                None if math.isnan(stamp) else stamp))
    if not frames:
        raise ValueError(f"{path}: no data rows")
    return frames


def _number(row: dict, column: str, where: str, default: float | None = None) -> float:
    """A finite number from a CSV row; ``default`` for a missing column or empty field (None: required)."""
    text = row.get(column) or ""
    if text.strip() == "" and default is not None:
        return default
    return parse_csv_float(text, where, column)
