"""GSV-Cities (Ali-bey et al. 2022), the place-grouped training set most current VPR methods use.

Layout, as in amaralibey/gsv-cities (dataloaders/GSVCitiesDataset.py)::

    <root>/Dataframes/<City>.csv   columns place_id, year, month, northdeg, city_id, lat, lon, panoid
    <root>/Images/<city_id>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

``lat`` / ``lon`` in the file name are the CSV values as Python prints the parsed float
(pandas ``str(row['lat'])``), so 45.50 in the CSV is ``45.5`` in the name. Place ids are
per city; here every place gets one global index, so city A's place 13 and city B's place
13 stay apart (the reference loader adds ``city_index * 10**5`` for the same reason).
Like the reference loader, places with fewer than ``min_images_per_place`` images are
dropped (training samples K images per place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structvpr_core.data.datasets import _read_csv, _require_files, parse_csv_float

GSV_COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")


@dataclass
class GSVCities:
    """Images grouped by place. ``places[i]`` = indices into ``images`` of global place ``i``."""

    images: list[Path]
    place: np.ndarray  # (N,) int64 global place index
    city: list[str]  # (N,) city_id
    latlon: np.ndarray  # (N, 2) float64 degrees
    year_month: np.ndarray  # (N, 2) int64
    northdeg: np.ndarray  # (N,) int64 heading of the crop, degrees from north
    places: list[np.ndarray]


def gsv_image_name(city_id: str, place_id: int, year: int, month: int, northdeg: int,
                   lat: float, lon: float, panoid: str) -> str:
    """The file name the GSV-Cities release uses for one row of its CSVs."""
    return (f"{city_id}_{place_id:07d}_{year:04d}_{month:02d}_{northdeg:03d}_"
            f"{lat!s}_{lon!s}_{panoid}.jpg")


def _parse_int(text: str, where: str, column: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{where}: column {column!r}: {text!r} is not an integer") from None


def gsv_cities(root: str | Path, cities: list[str] | None = None, min_images_per_place: int = 4,
               check_files: bool = True) -> GSVCities:
    """Read ``cities`` (CSV stems under Dataframes/; default: all of them) into one GSVCities."""
    root = Path(root)
    frames = root / "Dataframes"
    if not frames.is_dir():
        raise FileNotFoundError(f"GSV-Cities folder not found: {frames} (expected <root>/Dataframes/<City>.csv)")
    available = sorted(p.stem for p in frames.glob("*.csv"))
    cities = list(cities) if cities is not None else available
    unknown = [c for c in cities if c not in available]
    if unknown or not cities:
        raise ValueError(f"GSV-Cities cities {unknown or cities} not in {frames}; available: {available}")
    if min_images_per_place < 1:
        raise ValueError(f"min_images_per_place must be >= 1, got {min_images_per_place}")

    images, keys, city_ids, latlon, year_month, northdeg = [], [], [], [], [], []
    for city in cities:
        csv_path = frames / f"{city}.csv"
        for line, row in _read_csv(csv_path, GSV_COLUMNS):
            where = f"{csv_path}:{line}"
            place_id, year, month, heading = (_parse_int(row[c], where, c)
                                              for c in ("place_id", "year", "month", "northdeg"))
            lat, lon = (parse_csv_float(row[c], where, c) for c in ("lat", "lon"))
            city_id, panoid = row["city_id"].strip(), row["panoid"].strip()
            name = gsv_image_name(city_id, place_id, year, month, heading, lat, lon, panoid)
            images.append(root / "Images" / city_id / name)
            keys.append((city, place_id))
            city_ids.append(city_id)
            latlon.append((lat, lon))
            year_month.append((year, month))
            northdeg.append(heading)

    # one global index per (csv, place_id), in order of first appearance
    index_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    place = np.array([index_of[k] for k in keys], np.int64)
    counts = np.bincount(place)
    keep = counts[place] >= min_images_per_place
    if not keep.any():
        raise ValueError(f"GSV-Cities {cities}: no place has {min_images_per_place} or more images")
    kept_places = np.flatnonzero(counts >= min_images_per_place)
    renumber = np.full(len(counts), -1, np.int64)
    renumber[kept_places] = np.arange(len(kept_places))
    place = renumber[place[keep]]
    images = [p for p, k in zip(images, keep) if k]
    if check_files:
        _require_files(images, f"GSV-Cities {root}")
    return GSVCities(
        images=images, place=place, city=[c for c, k in zip(city_ids, keep) if k],
        latlon=np.asarray(latlon, np.float64)[keep], year_month=np.asarray(year_month, np.int64)[keep],
        northdeg=np.asarray(northdeg, np.int64)[keep],
        places=np.split(np.argsort(place, kind="stable"), np.cumsum(counts[kept_places])[:-1]),
    )
