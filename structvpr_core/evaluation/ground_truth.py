"""Ground truth for loop-closure runs: which map keyframes are the same place as a query.

Two ways of living with a map, two rules:
- localization (a fixed map from an earlier run): the true matches of a query are the map
  keyframes within ``radius`` of its position (``within_radius``);
- mapping (one run that revisits places): the true revisits of keyframe q are the keyframes
  that entered the map before it, lie within ``radius``, and are older than the exclusion
  window, since the detector may not return what it excludes (``revisits``).
Positions are (N, D) arrays in any unit (metres, or frame numbers on aligned data sets);
rows with NaN are unknown and never match. Or from files: ``pairs_csv`` (two stamps per row
that are the same place) and ``loop_matrix`` (N x N over the run's images, nonzero = same
place), both read here with a message naming the file and line on bad input.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

NS_PER_S = 1_000_000_000


def _positions(positions) -> np.ndarray:
    array = np.asarray(positions, np.float64)
    return array.reshape(len(array), -1)


def within_radius(query_positions, map_positions, radius: float) -> list[np.ndarray]:
    """Per query: ids of map rows within ``radius`` (localization)."""
    if not radius >= 0:
        raise ValueError(f"ground-truth radius must be >= 0, got {radius}")
    q, m = _positions(query_positions), _positions(map_positions)
    known = np.flatnonzero(~np.isnan(m).any(axis=1))
    return [known[np.linalg.norm(m[known] - p, axis=1) <= radius] if not np.isnan(p).any()
            else np.empty(0, np.int64) for p in q]


def revisits(stamps_ns, positions, radius: float, exclude_recent_s: float, first_query: int = 0) -> list[np.ndarray]:
    """Mapping mode: rows are keyframes in the order they entered the map (row = map id).

    Returns, for each query row ``first_query..N-1`` (rows before it: a map the run started
    from), the ids of earlier rows within ``radius`` stamped at least ``exclude_recent_s``
    before it.
    """
    if not radius >= 0:
        raise ValueError(f"ground-truth radius must be >= 0, got {radius}")
    stamps = np.asarray(stamps_ns, np.int64)
    pos = _positions(positions)
    if len(stamps) != len(pos):
        raise ValueError(f"{len(stamps)} stamps but {len(pos)} positions")
    window = round(exclude_recent_s * NS_PER_S)
    known = ~np.isnan(pos).any(axis=1)
    out = []
    for q in range(first_query, len(stamps)):
        if not known[q]:
            out.append(np.empty(0, np.int64))
            continue
        earlier = np.flatnonzero(known[:q] & (stamps[:q] <= stamps[q] - window))
        out.append(earlier[np.linalg.norm(pos[earlier] - pos[q], axis=1) <= radius])
    return out


def _integer_rows(path: Path, columns: tuple[str, str], what: str):
    """``(where, first, second)`` per row of a headed CSV whose ``columns`` hold integers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected the header {','.join(columns)}, got {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                first, second = int(row[columns[0]]), int(row[columns[1]])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {what} must be integers, got {row}") from None
            yield where, first, second


def map_ids_csv(path: Path, stamps_ns, map_size: int) -> list[np.ndarray]:
    """Localization: CSV ``query_stamp_ns,map_id``, one row per correct (query image, map keyframe) pair.

    A stamp names every image of the run with that stamp.
    """
    by_stamp: dict[int, list[int]] = {int(s): [] for s in stamps_ns}
    for where, stamp, map_id in _integer_rows(path, ("query_stamp_ns", "map_id"), "query_stamp_ns and map_id"):
        if stamp not in by_stamp:
            raise ValueError(f"{where}: no image of the run has stamp {stamp} ns")
        if not 0 <= map_id < map_size:
            raise ValueError(f"{where}: map id {map_id} is not in the map (ids 0..{map_size - 1})")
        by_stamp[stamp].append(map_id)
    return [np.unique(np.array(by_stamp[int(s)], np.int64)) for s in stamps_ns]


def pairs_csv(path: Path, stamps_ns) -> list[np.ndarray]:
    """CSV ``stamp_a_ns,stamp_b_ns``: one row per pair of images of the run that are the same place.

    Returns, per image (``stamps_ns``, the run's images), the indices of the images it pairs with.
    """
    index = {int(s): i for i, s in enumerate(stamps_ns)}
    partners: list[set[int]] = [set() for _ in stamps_ns]
    for where, a, b in _integer_rows(path, ("stamp_a_ns", "stamp_b_ns"), "stamps (ns)"):
        for s in (a, b):
            if s not in index:
                raise ValueError(f"{where}: no image of the run has stamp {s} ns")
        partners[index[a]].add(index[b])
        partners[index[b]].add(index[a])
    return [np.array(sorted(p), np.int64) for p in partners]


def loop_matrix(path: Path, count: int) -> list[np.ndarray]:
    """An N x N matrix (.npy, or text: .csv / .txt, comma or space separated) over the run's ``count``
    images in order; a nonzero entry (i, j) says images i and j are the same place."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    try:
        matrix = (np.load(path, allow_pickle=False) if path.suffix == ".npy"
                  else np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2))
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable loop matrix ({e})") from None
    if matrix.shape != (count, count):
        raise ValueError(f"{path}: loop matrix is {matrix.shape[0]}x{matrix.shape[1] if matrix.ndim > 1 else 1}, "
                         f"the run has {count} images")
    same = (matrix != 0) | (matrix.T != 0)  # either triangle may be given
    np.fill_diagonal(same, False)
    return [np.flatnonzero(row) for row in same]


def revisits_from_partners(partners: list[np.ndarray], map_ids: list[int | None], stamps_ns,
                           exclude_recent_s: float) -> list[np.ndarray]:
    """Mapping mode with file ground truth: per image, the map ids of its partner images that
    entered the map before it and are older than the exclusion window (``map_ids[i]`` None:
    image i never became a keyframe)."""
    stamps = np.asarray(stamps_ns, np.int64)
    window = round(exclude_recent_s * NS_PER_S)
    out = []
    for i, others in enumerate(partners):
        ids = [map_ids[j] for j in others
               if map_ids[j] is not None and map_ids[i] is not None and map_ids[j] < map_ids[i]
               and stamps[j] <= stamps[i] - window]
        out.append(np.array(sorted(ids), np.int64))
    return out
