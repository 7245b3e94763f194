"""Place-recognition datasets as plain lists of image paths plus ground truth.

Every reader returns a ``PlaceSet``: database images, query images and, per query, the
database indices that count as correct. These on-disk layouts are understood:

* aligned folders (Nordland, Gardens Point): the trailing integer of a file name is the
  place id; the shared copies have declared splits (``NORDLAND64_SPLITS``,
  ``GARDENSPOINT_SPLITS``);
* GRIEF seasons: ``<site>/places_gt.csv`` (file, session, place), 12 monthly sessions of
  the same 5 places per site, split by site (``GRIEF_SPLITS``);
* gmberton UTM folders (Pitts30k, SF-XL, ... as made by VPR-datasets-downloader):
  ``@<utm_east>@<utm_north>@<zone>@<letter>@<lat>@<lon>@<pano>@<tile>@<heading>@...@.jpg``;
* MSLS (Mapillary Street-Level Sequences): ``<root>/train_val/<city>/{query,database}/``
  with ``images/<key>.jpg``, ``postprocessed.csv`` (``,key,easting,northing,...``) and
  ``raw.csv`` (``,key,lon,lat,ca,captured_at,pano``);
* a generic CSV of poses: header ``image,x,y[,heading][,stamp]``.

Ground truth for metric layouts is exact (float64 distances, radius inclusive), so a
database image exactly ``radius_m`` away is a positive, as with sklearn's
``radius_neighbors`` used by the reference loaders.
"""

from __future__ import annotations

import csv
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from structvpr_core.paths import shared_dir

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Nordland frame-number stretches of the nordland64 copy (see shared/data/README.md).
NORDLAND64_SPLITS = {"train": (1500, 23990), "val": (24000, 28990), "test": (29000, 35760)}
# Gardens Point Walking (shared/data/gardenspoint): frame NNN is the same place in all three
# traversals. The 10-frame gaps between splits exceed GARDENSPOINT_NEGATIVE_MARGIN, so no
# training frame is even a non-negative of a val/test frame.
GARDENSPOINT_SPLITS = {"train": (0, 129), "val": (140, 164), "test": (175, 199)}
GARDENSPOINT_TRAVERSALS = ("day_left", "day_right", "night_right")
GARDENSPOINT_SOFT_TOLERANCE = 2  # the usual +-2 frames of the VPR literature
# Frames a few steps apart along the walk still share most of the view: not negatives.
GARDENSPOINT_NEGATIVE_MARGIN = 5
# GRIEF seasons (shared/data/grief_seasons): 5 places x 12 monthly sessions per site. The split
# is by site, so no training place is ever evaluated: michigan trains, stromovka tests. With 5
# places per site a place split inside one site would leave 2-3 places per side, and no val
# set is carved out: model selection uses nordland64 val and gardenspoint val.
GRIEF_SPLITS = {"train": ("michigan",), "test": ("stromovka",)}
GRIEF_SESSIONS = tuple(range(1, 13))
# Frames within +-100 frame numbers (10 files of nordland64) are never used as training
# negatives: the train stands still at stations and in sidings, so frames tens of
# frame numbers apart can show the very same scene; a wrong "negative" there would
# teach the network to separate identical places.
NORDLAND_NEGATIVE_MARGIN = 100

# City lists of the official loader (mapillary/mapillary_sls, datasets/msls.py).
MSLS_CITIES = {
    "train": ("trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo",
              "toronto", "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest",
              "austin", "berlin", "ottawa", "phoenix", "goa", "amman", "nairobi", "manila"),
    "val": ("cph", "sf"),
}


@dataclass
class PlaceSet:
    """A retrieval problem: database images, query images, and ground truth.

    ``positives[i]`` / ``hard_positives[i]`` / ``non_negatives[i]`` are sorted int64
    database indices for query ``i``: soft ground truth, strict ground truth (the exact
    frame for aligned folders, equal to ``positives`` otherwise), and images too close
    to the query to be used as training negatives (a superset of ``positives``).
    A query with no database image in range is kept, with empty arrays.

    ``db_meta`` / ``q_meta`` hold optional per-image arrays, one row per image:
    ``utm`` (N, 2) float64 metres (easting/x, northing/y), ``heading`` (N,) float64
    degrees in [0, 360) or NaN where unknown, ``stamp`` (N,) float64 seconds or NaN,
    ``place_id`` (N,) int64 for aligned folders, ``night`` (N,) bool for MSLS.
    """

    name: str
    database: list[Path]
    queries: list[Path]
    positives: list[np.ndarray]
    hard_positives: list[np.ndarray]
    non_negatives: list[np.ndarray]
    db_meta: dict[str, np.ndarray] = field(default_factory=dict)
    q_meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        n_q, n_db = len(self.queries), len(self.database)
        for label in ("positives", "hard_positives", "non_negatives"):
            lists = getattr(self, label)
            if len(lists) != n_q:
                raise ValueError(f"{self.name}: {label} has {len(lists)} entries for {n_q} queries")
            for indices in lists:
                if (indices.dtype != np.int64 or (indices.size and (indices[0] < 0 or indices[-1] >= n_db))
                        or (np.diff(indices) <= 0).any()):
                    raise ValueError(f"{self.name}: {label} must be sorted int64 indices into the database")
        for label, meta, n in (("db_meta", self.db_meta, n_db), ("q_meta", self.q_meta, n_q)):
            for key, values in meta.items():
                if len(values) != n:
                    raise ValueError(f"{self.name}: {label}[{key!r}] has {len(values)} rows for {n} images")

    def num_queries_with_match(self) -> int:
        return sum(1 for p in self.positives if p.size > 0)


# ---------------------------------------------------------------- geometry


def heading_difference_deg(a, b) -> np.ndarray:
    """Absolute angle between headings in degrees, in [0, 180]: 350 vs 10 -> 20."""
    return np.abs((np.asarray(a, np.float64) - np.asarray(b, np.float64) + 180.0) % 360.0 - 180.0)


def radius_neighbors(q_xy: np.ndarray, db_xy: np.ndarray,
                     radius: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For each query row: sorted database indices with distance <= radius, and those distances.

    Exact float64 brute force restricted to a strip: database and queries are sorted by x,
    so a block of neighbouring queries only compares against database points whose x lies
    within ``radius`` of the block. Fast for 10k x 10k city-scale sets, no KD-tree needed.
    """
    q_xy = np.asarray(q_xy, np.float64)
    db_xy = np.asarray(db_xy, np.float64)
    db_order = np.argsort(db_xy[:, 0], kind="stable")
    db_sorted = db_xy[db_order]
    q_order = np.argsort(q_xy[:, 0], kind="stable")
    indices: list[np.ndarray] = [np.empty(0, np.int64)] * len(q_xy)
    distances: list[np.ndarray] = [np.empty(0, np.float64)] * len(q_xy)
    block = 64
    for start in range(0, len(q_order), block):
        q_ids = q_order[start:start + block]
        q = q_xy[q_ids]
        lo = np.searchsorted(db_sorted[:, 0], q[:, 0].min() - radius, side="left")
        hi = np.searchsorted(db_sorted[:, 0], q[:, 0].max() + radius, side="right")
        dx = q[:, None, 0] - db_sorted[None, lo:hi, 0]
        dy = q[:, None, 1] - db_sorted[None, lo:hi, 1]
        dist = np.sqrt(dx * dx + dy * dy)
        for row, q_id in enumerate(q_ids):
            hits = np.flatnonzero(dist[row] <= radius)
            db_ids = db_order[lo + hits]
            order = np.argsort(db_ids)
            indices[q_id] = db_ids[order].astype(np.int64)
            distances[q_id] = dist[row, hits][order]
    return indices, distances


def _pose_ground_truth(q_xy, db_xy, q_heading, db_heading, radius_m: float,
                       max_angle_deg: float | None, negative_radius_m: float):
    """Positives (within radius and, if asked, heading) and non-negatives (distance only)."""
    if not (np.isfinite(radius_m) and radius_m > 0):
        raise ValueError(f"radius_m must be a positive number, got {radius_m}")
    if not (np.isfinite(negative_radius_m) and negative_radius_m >= 0):
        raise ValueError(f"negative_radius_m must be >= 0, got {negative_radius_m}")
    if max_angle_deg is not None:
        if not 0 < max_angle_deg <= 180:
            raise ValueError(f"max_angle_deg must be in (0, 180] or None, got {max_angle_deg}")
        for label, heading in (("query", q_heading), ("database", db_heading)):
            missing = int(np.isnan(heading).sum())
            if missing:
                raise ValueError(f"max_angle_deg={max_angle_deg} needs headings, but {missing} "
                                 f"{label} images have none")
    near, dist = radius_neighbors(q_xy, db_xy, max(radius_m, negative_radius_m))
    positives = []
    for i, (idx, d) in enumerate(zip(near, dist)):
        keep = d <= radius_m
        if max_angle_deg is not None:
            keep &= heading_difference_deg(q_heading[i], db_heading[idx]) <= max_angle_deg
        positives.append(idx[keep])
    # A place seen from the opposite direction is not a positive, but it is still too
    # close to trust as a negative: non-negatives ignore heading.
    return positives, near


def _checked(place_set: PlaceSet) -> PlaceSet:
    """Refuse a set where no query can be answered; say how many queries have no match."""
    matched = place_set.num_queries_with_match()
    if matched == 0:
        raise ValueError(f"{place_set.name}: none of the {len(place_set.queries)} queries has a "
                         "database image within tolerance (wrong folders, split or radius?)")
    if matched < len(place_set.queries):
        log.warning("%s: %d of %d queries have no database match; kept with empty positives",
                    place_set.name, len(place_set.queries) - matched, len(place_set.queries))
    return place_set


# ---------------------------------------------------------------- files


def _list_images(directory: Path, recursive: bool = False) -> list[Path]:
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder not found: {directory}")
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    images = sorted((p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=str)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return images


def _require_files(paths: list[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} {what} images are missing, "
                                f"e.g. {missing[0]}")


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a headed CSV, checking the header and field counts."""
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise ValueError(f"{path}: empty file, expected a header line")
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        rows = []
        for row in reader:
            if None in row or None in row.values():
                raise ValueError(f"{path}:{reader.line_num}: expected {len(header)} fields "
                                 f"as in the header {header}")
            rows.append((reader.line_num, row))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return rows


def parse_csv_float(text: str, where: str, column: str, optional: bool = False) -> float:
    text = text.strip()
    if optional and text == "":
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"{where}: column {column!r}: {text!r} is not a finite number")
    return value


def _parse_bool(text: str, where: str, column: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError(f"{where}: column {column!r}: {text!r} is not True/False")


# ---------------------------------------------------------------- (a) aligned folders

_TRAILING_INT = re.compile(r"(\d+)$")


def _images_by_id(directory: Path, frame_range: tuple[int, int] | None) -> tuple[list[Path], np.ndarray]:
    """Images of a folder sorted by the trailing integer of their stem (the place id)."""
    images = _list_images(directory)
    ids = []
    for path in images:
        match = _TRAILING_INT.search(path.stem)
        if match is None:
            raise ValueError(f"cannot read a place id from {path.name!r}: the file name must "
                             f"end in a frame number, e.g. images-01500.png")
        ids.append(int(match.group(1)))
    ids = np.asarray(ids, np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{directory}: place id {unique[counts > 1][0]} is used by more than one image")
    order = np.argsort(ids)
    images, ids = [images[i] for i in order], ids[order]
    if frame_range is not None:
        lo, hi = frame_range
        keep = (ids >= lo) & (ids <= hi)
        if not keep.any():
            raise ValueError(f"{directory}: no images with place id in [{lo}, {hi}]")
        images, ids = [p for p, k in zip(images, keep) if k], ids[keep]
    return images, ids


def _id_window(db_ids: np.ndarray, q_id: int, tolerance: int) -> np.ndarray:
    """Indices of the (sorted, unique) db ids with |id - q_id| <= tolerance."""
    lo = np.searchsorted(db_ids, q_id - tolerance, side="left")
    hi = np.searchsorted(db_ids, q_id + tolerance, side="right")
    return np.arange(lo, hi, dtype=np.int64)


def aligned_folders(db_dir: str | Path, q_dir: str | Path, soft_tolerance: int = 0,
                    hard_tolerance: int = 0, frame_range: tuple[int, int] | None = None,
                    negative_margin: int | None = None, name: str | None = None) -> PlaceSet:
    """Two frame-aligned folders (Nordland style): same trailing number = same place.

    ``soft_tolerance`` / ``hard_tolerance`` / ``negative_margin`` are in id units
    (``|id_q - id_db| <= tolerance``); ``negative_margin`` defaults to ``soft_tolerance``.
    ``frame_range=(lo, hi)`` keeps only ids in that inclusive range, in both folders.
    """
    db_dir, q_dir = Path(db_dir), Path(q_dir)
    if negative_margin is None:
        negative_margin = soft_tolerance
    if not 0 <= hard_tolerance <= soft_tolerance <= negative_margin:
        raise ValueError("need 0 <= hard_tolerance <= soft_tolerance <= negative_margin, got "
                         f"{hard_tolerance}, {soft_tolerance}, {negative_margin}")
    if frame_range is not None and frame_range[0] > frame_range[1]:
        raise ValueError(f"frame_range must be (lo, hi) with lo <= hi, got {frame_range}")
    database, db_ids = _images_by_id(db_dir, frame_range)
    queries, q_ids = _images_by_id(q_dir, frame_range)
    return _checked(PlaceSet(
        name=name or f"{q_dir.name}->{db_dir.name}",
        database=database,
        queries=queries,
        positives=[_id_window(db_ids, q, soft_tolerance) for q in q_ids],
        hard_positives=[_id_window(db_ids, q, hard_tolerance) for q in q_ids],
        non_negatives=[_id_window(db_ids, q, negative_margin) for q in q_ids],
        db_meta={"place_id": db_ids},
        q_meta={"place_id": q_ids},
    ))


def nordland64(root: str | Path | None = None, split: str = "test", soft_tolerance: int = 10) -> PlaceSet:
    """nordland64 (shared/data): winter queries against the summer database.

    ``soft_tolerance`` is in Nordland frame numbers; files are every 10th frame, so the
    default 10 accepts one neighbouring file each side. Hard ground truth = same frame.
    """
    if split not in NORDLAND64_SPLITS:
        raise ValueError(f"nordland64 split must be one of {sorted(NORDLAND64_SPLITS)}, got {split!r}")
    root = Path(root) if root is not None else shared_dir() / "data" / "nordland64"
    return aligned_folders(root / "summer", root / "winter", soft_tolerance=soft_tolerance,
                           hard_tolerance=0, frame_range=NORDLAND64_SPLITS[split],
                           negative_margin=max(NORDLAND_NEGATIVE_MARGIN, soft_tolerance),
                           name=f"nordland64-{split}")


def gardenspoint(root: str | Path | None = None, split: str = "test", database: str = "day_right",
                 queries: str = "day_left", soft_tolerance: int = GARDENSPOINT_SOFT_TOLERANCE) -> PlaceSet:
    """Gardens Point Walking (shared/data/gardenspoint): one traversal against another.

    ``database`` / ``queries`` are traversal folders (day_left, day_right, night_right);
    day_left vs day_right is a viewpoint change (other side of the path), night_right vs
    day_right a day/night change. Soft ground truth +-``soft_tolerance`` frames, hard = same
    frame. Known flaw of the data: night_right Image179 and Image183 are the same file.
    """
    if split not in GARDENSPOINT_SPLITS:
        raise ValueError(f"gardenspoint split must be one of {sorted(GARDENSPOINT_SPLITS)}, got {split!r}")
    for label, traversal in (("database", database), ("queries", queries)):
        if traversal not in GARDENSPOINT_TRAVERSALS:
            raise ValueError(f"gardenspoint {label} must be one of {GARDENSPOINT_TRAVERSALS}, got {traversal!r}")
    if database == queries:
        raise ValueError(f"gardenspoint: database and queries are both {database!r}; pick two traversals")
    root = Path(root) if root is not None else shared_dir() / "data" / "gardenspoint"
    return aligned_folders(root / database, root / queries, soft_tolerance=soft_tolerance,
                           hard_tolerance=0, frame_range=GARDENSPOINT_SPLITS[split],
                           negative_margin=max(GARDENSPOINT_NEGATIVE_MARGIN, soft_tolerance),
                           name=f"gardenspoint-{split}-{queries}->{database}")


def _read_grief_site(site_dir: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Image paths, sessions and places of one GRIEF site from its places_gt.csv.

    The header is ``file,session(1-12),place(1-5)``: columns are taken by position.
    """
    csv_path = site_dir / "places_gt.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"GRIEF ground truth not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    if len(lines) < 2 or [c.split("(")[0].strip() for c in lines[0]] != ["file", "session", "place"]:
        raise ValueError(f"{csv_path}: expected a header 'file,session,place' and data rows")
    paths, sessions, places = [], [], []
    for number, row in enumerate(lines[1:], start=2):
        where = f"{csv_path}:{number}"
        if len(row) != 3:
            raise ValueError(f"{where}: expected 3 fields (file, session, place), got {len(row)}")
        paths.append(site_dir / row[0].strip())
        for value, column, out in ((row[1], "session", sessions), (row[2], "place", places)):
            number_value = parse_csv_float(value, where, column)
            if number_value != int(number_value) or number_value < 1:
                raise ValueError(f"{where}: column {column!r}: {value!r} is not a positive integer")
            out.append(int(number_value))
    sessions, places = np.asarray(sessions, np.int64), np.asarray(places, np.int64)
    pairs = set(zip(sessions.tolist(), places.tolist()))
    if len(pairs) != len(paths):
        raise ValueError(f"{csv_path}: some (session, place) pair is listed twice")
    _require_files(paths, str(site_dir))
    return paths, sessions, places


def grief_site(root: str | Path | None = None, site: str = "stromovka",
               database_sessions=GRIEF_SESSIONS, query_sessions=GRIEF_SESSIONS) -> PlaceSet:
    """One GRIEF site: images of ``query_sessions`` against those of ``database_sessions``.

    Same place (PP of SSPP.jpg) = match, but only across sessions: an image is never its
    own positive, so all sessions against all sessions is a valid training set (every
    image a query, positives = the same place in the other 11 seasons). Non-negatives =
    the same place in any session.
    """
    root = Path(root) if root is not None else shared_dir() / "data" / "grief_seasons"
    paths, sessions, places = _read_grief_site(root / site)
    for label, wanted in (("database", database_sessions), ("query", query_sessions)):
        unknown = sorted(set(wanted) - set(sessions.tolist()))
        if unknown or not wanted:
            raise ValueError(f"grief {site}: {label} sessions {list(wanted)} are not all in "
                             f"{sorted(set(sessions.tolist()))}")
    db_ids = np.flatnonzero(np.isin(sessions, list(database_sessions)))
    q_ids = np.flatnonzero(np.isin(sessions, list(query_sessions)))
    positives, non_negatives = [], []
    for q in q_ids:
        same_place = places[db_ids] == places[q]
        positives.append(np.flatnonzero(same_place & (sessions[db_ids] != sessions[q])).astype(np.int64))
        non_negatives.append(np.flatnonzero(same_place).astype(np.int64))
    db_name = "all" if len(db_ids) == len(paths) else "+".join(f"{s:02d}" for s in database_sessions)
    return _checked(PlaceSet(
        name=f"grief-{site}-db{db_name}", database=[paths[i] for i in db_ids],
        queries=[paths[i] for i in q_ids], positives=positives, hard_positives=list(positives),
        non_negatives=non_negatives,
        db_meta={"place_id": places[db_ids], "session": sessions[db_ids]},
        q_meta={"place_id": places[q_ids], "session": sessions[q_ids]},
    ))


def grief_seasons(root: str | Path | None = None, split: str = "test") -> list[PlaceSet]:
    """The GRIEF season protocol: every session in turn is the database (one image per
    place), the other 11 sessions are its queries; one PlaceSet per (site, database
    session), to be pooled. All 12x11 ordered season pairs count, as in GRIEF's own
    evaluation. With 5 places in a database, R@5 and beyond are 1 by construction:
    R@1 is the figure to read.
    """
    if split not in GRIEF_SPLITS:
        raise ValueError(f"grief split must be one of {sorted(GRIEF_SPLITS)} (no val: with 5 places "
                         f"per site none can be spared; select on nordland64/gardenspoint val), got {split!r}")
    return [grief_site(root, site, (session,), tuple(s for s in GRIEF_SESSIONS if s != session))
            for site in GRIEF_SPLITS[split] for session in GRIEF_SESSIONS]


# ---------------------------------------------------------------- (b) UTM-named folders


def _utm_from_names(images: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) UTM east/north and (N,) heading (NaN if absent) from gmberton file names."""
    utm = np.empty((len(images), 2), np.float64)
    heading = np.full(len(images), np.nan)
    for i, path in enumerate(images):
        fields = path.name.split("@")
        if len(fields) < 3 or fields[0] != "":
            raise ValueError(f"{path}: expected a name like @<utm_east>@<utm_north>@...@.jpg")
        utm[i, 0] = parse_csv_float(fields[1], str(path), "utm_east")
        utm[i, 1] = parse_csv_float(fields[2], str(path), "utm_north")
        if len(fields) > 9 and fields[9].strip():
            heading[i] = parse_csv_float(fields[9], str(path), "heading") % 360.0
    return utm, heading


def utm_folders(db_dir: str | Path, q_dir: str | Path, radius_m: float = 25.0,
                max_angle_deg: float | None = None, negative_radius_m: float = 25.0,
                name: str | None = None) -> PlaceSet:
    """Folders of gmberton-named images (``@east@north@...``; searched recursively).

    Positives: database images within ``radius_m`` metres (25 m is the standard
    evaluation threshold). Non-negatives: within ``max(radius_m, negative_radius_m)``.
    """
    db_dir, q_dir = Path(db_dir), Path(q_dir)
    database = _list_images(db_dir, recursive=True)
    queries = _list_images(q_dir, recursive=True)
    db_utm, db_heading = _utm_from_names(database)
    q_utm, q_heading = _utm_from_names(queries)
    positives, non_negatives = _pose_ground_truth(q_utm, db_utm, q_heading, db_heading,
                                                  radius_m, max_angle_deg, negative_radius_m)
    return _checked(PlaceSet(
        name=name or f"{q_dir.name}->{db_dir.name}",
        database=database, queries=queries,
        positives=positives, hard_positives=list(positives), non_negatives=non_negatives,
        db_meta={"utm": db_utm, "heading": db_heading},
        q_meta={"utm": q_utm, "heading": q_heading},
    ))


def pitts30k(root: str | Path, split: str = "test", radius_m: float = 25.0) -> PlaceSet:
    """Pitts30k as formatted by gmberton/VPR-datasets-downloader:
    ``<root>/images/<split>/{database,queries}/@...@.jpg``."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"pitts30k split must be train, val or test, got {split!r}")
    images = Path(root) / "images" / split
    return utm_folders(images / "database", images / "queries", radius_m=radius_m,
                       name=f"pitts30k-{split}")


# ---------------------------------------------------------------- (c) MSLS


def _read_msls_side(side_dir: Path, subtask: str | None) -> tuple[list[Path], dict[str, np.ndarray]]:
    """Images and metadata of one MSLS ``query`` or ``database`` folder, panoramas excluded."""
    if not side_dir.is_dir():
        raise FileNotFoundError(f"MSLS folder not found: {side_dir}")
    post_csv, raw_csv = side_dir / "postprocessed.csv", side_dir / "raw.csv"
    post = _read_csv(post_csv, ("key", "easting", "northing"))
    raw = {row["key"].strip(): (line, row) for line, row in _read_csv(raw_csv, ("key", "ca", "pano"))}

    keep = np.ones(len(post), bool)
    if subtask is not None:
        # Like the official val loader: rows of subtask_index.csv align with postprocessed.csv.
        subtask_csv = side_dir / "subtask_index.csv"
        if subtask_csv.is_file():
            flags = _read_csv(subtask_csv, (subtask,))
            if len(flags) != len(post):
                raise ValueError(f"{subtask_csv}: {len(flags)} rows, but {post_csv} has {len(post)}")
            keep = np.array([_parse_bool(r[subtask], f"{subtask_csv}:{n}", subtask) for n, r in flags])
        elif subtask != "all":
            raise FileNotFoundError(f"subtask {subtask!r} needs {subtask_csv}")

    paths, utm, heading, night = [], [], [], []
    for (line, row), wanted in zip(post, keep):
        where = f"{post_csv}:{line}"
        key = row["key"].strip()
        if key not in raw:
            raise ValueError(f"{where}: key {key!r} is not in {raw_csv}")
        raw_line, raw_row = raw[key]
        raw_where = f"{raw_csv}:{raw_line}"
        if not wanted or _parse_bool(raw_row["pano"], raw_where, "pano"):
            continue  # the official loader drops panoramas (exclude_panos=True)
        paths.append(side_dir / "images" / f"{key}.jpg")
        utm.append((parse_csv_float(row["easting"], where, "easting"),
                    parse_csv_float(row["northing"], where, "northing")))
        heading.append(parse_csv_float(raw_row["ca"], raw_where, "ca", optional=True) % 360.0)
        if "night" in row:
            night.append(_parse_bool(row["night"], where, "night"))
    if not paths:
        raise ValueError(f"{side_dir}: no non-panorama images listed in {post_csv}")
    _require_files(paths, str(side_dir))
    meta = {"utm": np.asarray(utm, np.float64), "heading": np.asarray(heading, np.float64)}
    if night:
        meta["night"] = np.asarray(night, bool)
    return paths, meta


def msls_city(root: str | Path, city: str, split: str = "val", radius_m: float = 25.0,
              max_angle_deg: float | None = None, negative_radius_m: float = 25.0,
              subtask: str = "all") -> PlaceSet:
    """One MSLS city from ``<root>/train_val/<city>/{query,database}``.

    Follows mapillary/mapillary_sls: UTM from postprocessed.csv (easting, northing),
    panoramas (raw.csv ``pano``) excluded, positives = database within ``radius_m``
    (its evaluate.py uses 25 m, distance only). ``max_angle_deg`` additionally requires
    the compass angles (raw.csv ``ca``) to agree; off by default, as in the official
    evaluation. For ``split='val'`` the ``subtask`` column of subtask_index.csv is
    applied when that file exists (all, s2w, w2s, o2n, n2o, d2n, n2d).
    """
    if split not in ("train", "val"):
        raise ValueError(f"MSLS split must be 'train' or 'val' (test cities have no public "
                         f"poses), got {split!r}")
    city_dir = Path(root) / "train_val" / city
    if not city_dir.is_dir():
        raise FileNotFoundError(f"MSLS city folder not found: {city_dir}")
    side_subtask = subtask if split == "val" else None
    database, db_meta = _read_msls_side(city_dir / "database", side_subtask)
    queries, q_meta = _read_msls_side(city_dir / "query", side_subtask)
    positives, non_negatives = _pose_ground_truth(q_meta["utm"], db_meta["utm"], q_meta["heading"],
                                                  db_meta["heading"], radius_m, max_angle_deg,
                                                  negative_radius_m)
    return _checked(PlaceSet(
        name=f"msls-{city}-{split}", database=database, queries=queries,
        positives=positives, hard_positives=list(positives), non_negatives=non_negatives,
        db_meta=db_meta, q_meta=q_meta,
    ))


# ---------------------------------------------------------------- (d) generic pose CSV


def _read_pose_csv(csv_path: Path, image_root: Path | None) -> tuple[list[Path], dict[str, np.ndarray]]:
    rows = _read_csv(csv_path, ("image", "x", "y"))
    base = image_root if image_root is not None else csv_path.parent
    has_heading, has_stamp = "heading" in rows[0][1], "stamp" in rows[0][1]
    paths, xy, heading, stamp = [], [], [], []
    for line, row in rows:
        where = f"{csv_path}:{line}"
        image = row["image"].strip()
        if not image:
            raise ValueError(f"{where}: empty 'image' field")
        paths.append(base / image)  # an absolute image path overrides base
        xy.append((parse_csv_float(row["x"], where, "x"), parse_csv_float(row["y"], where, "y")))
        if has_heading:
            heading.append(parse_csv_float(row["heading"], where, "heading", optional=True) % 360.0)
        if has_stamp:
            stamp.append(parse_csv_float(row["stamp"], where, "stamp", optional=True))
    _require_files(paths, str(csv_path))
    meta = {"utm": np.asarray(xy, np.float64),
            "heading": np.asarray(heading, np.float64) if has_heading else np.full(len(paths), np.nan)}
    if has_stamp:
        meta["stamp"] = np.asarray(stamp, np.float64)
    return paths, meta


def csv_poses(db_csv: str | Path, q_csv: str | Path, radius_m: float = 25.0,
              max_angle_deg: float | None = None, image_root: str | Path | None = None,
              negative_radius_m: float = 25.0, name: str | None = None) -> PlaceSet:
    """Database and queries from CSVs with header ``image,x,y[,heading][,stamp]``.

    x, y in metres (any planar frame shared by both files); heading in degrees, stamp in
    seconds, both may be empty. Image paths are relative to the CSV's folder (or to
    ``image_root``) unless absolute.
    """
    db_csv, q_csv = Path(db_csv), Path(q_csv)
    root = Path(image_root) if image_root is not None else None
    database, db_meta = _read_pose_csv(db_csv, root)
    queries, q_meta = _read_pose_csv(q_csv, root)
    positives, non_negatives = _pose_ground_truth(q_meta["utm"], db_meta["utm"], q_meta["heading"],
                                                  db_meta["heading"], radius_m, max_angle_deg,
                                                  negative_radius_m)
    return _checked(PlaceSet(
        name=name or f"{q_csv.stem}->{db_csv.stem}", database=database, queries=queries,
        positives=positives, hard_positives=list(positives), non_negatives=non_negatives,
        db_meta=db_meta, q_meta=q_meta,
    ))


# ---------------------------------------------------------------- factory

LAYOUTS: dict[str, Callable[..., PlaceSet]] = {
    "aligned_folders": aligned_folders,
    "nordland64": nordland64,
    "gardenspoint": gardenspoint,
    "grief_site": grief_site,
    "utm_folders": utm_folders,
    "pitts30k": pitts30k,
    "msls_city": msls_city,
    "csv_poses": csv_poses,
}


def load_place_set(spec: dict) -> PlaceSet:
    """Build a PlaceSet from ``{"layout": <name>, **reader arguments}`` (e.g. from YAML/CLI)."""
    spec = dict(spec)
    layout = spec.pop("layout", None)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}; known: {', '.join(LAYOUTS)}")
    reader = LAYOUTS[layout]
    try:
        inspect.signature(reader).bind(**spec)
    except TypeError as e:
        raise ValueError(f"dataset layout {layout!r}: {e}") from None
    if isinstance(spec.get("frame_range"), list):  # YAML has no tuples
        spec["frame_range"] = tuple(spec["frame_range"])
    return reader(**spec)
