"""GSV-Cities reader on a tiny tree written here in the release's layout (real JPEG files)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from structvpr_core.data.gsv_cities import GSV_COLUMNS, gsv_cities, gsv_image_name
from structvpr_core.data.images import read_rgb

# (place_id, year, month, northdeg, city_id, lat, lon, panoid): CSV text as in the release,
# lat/lon with a trailing zero that the image name drops (pandas prints the parsed float)
LONDON = [("0", "2015", "6", "90", "London", "51.50740", "-0.1278", "pXa"),
          ("0", "2017", "11", "270", "London", "51.5074", "-0.12780", "pXb"),
          ("1", "2012", "1", "5", "London", "51.51", "-0.13", "pYa"),
          ("1", "2019", "8", "185", "London", "51.51", "-0.13", "pYb"),
          ("2", "2019", "8", "185", "London", "51.52", "-0.14", "pZa")]  # one image only: dropped
BOSTON = [("0", "2014", "3", "0", "Boston", "42.3601", "-71.0589", "qA"),
          ("0", "2021", "9", "180", "Boston", "42.3601", "-71.0589", "qB")]


def write_city(root, csv_stem, rows, missing=()):
    frames = root / "Dataframes"
    frames.mkdir(parents=True, exist_ok=True)
    lines = [",".join(GSV_COLUMNS)] + [",".join(r) for r in rows]
    (frames / f"{csv_stem}.csv").write_text("\n".join(lines) + "\n")
    for i, (place, year, month, north, city, lat, lon, pano) in enumerate(rows):
        name = gsv_image_name(city, int(place), int(year), int(month), int(north), float(lat), float(lon), pano)
        if name in missing:
            continue
        path = root / "Images" / city / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), np.full((8, 12, 3), 10 * i, np.uint8))


def test_image_names_follow_the_release():
    # the name the reference loader builds for row 0 of London.csv
    assert (gsv_image_name("London", 0, 2015, 6, 90, 51.5074, -0.1278, "pXa")
            == "London_0000000_2015_06_090_51.5074_-0.1278_pXa.jpg")
    assert gsv_image_name("Boston", 1234, 2021, 9, 5, 42.36, -71.0, "q") == "Boston_0001234_2021_09_005_42.36_-71.0_q.jpg"


def test_places_are_grouped_across_cities(tmp_path):
    write_city(tmp_path, "London", LONDON)
    write_city(tmp_path, "Boston", BOSTON)
    data = gsv_cities(tmp_path, min_images_per_place=2)
    # Boston before London (sorted CSV stems); Boston's place 0 is not London's place 0
    assert len(data.places) == 3 and len(data.images) == 6
    assert [data.city[i] for i in data.places[0]] == ["Boston", "Boston"]
    assert [data.images[i].name.split("_")[1] for i in data.places[1]] == ["0000000", "0000000"]
    assert {data.city[i] for i in data.places[1]} == {"London"}
    assert data.place.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.year_month[data.places[2]].tolist() == [[2012, 1], [2019, 8]]
    assert data.northdeg[data.places[1]].tolist() == [90, 270]
    assert np.allclose(data.latlon[0], [42.3601, -71.0589])
    for path in data.images:
        assert read_rgb(path).shape == (8, 12, 3)
    only_london = gsv_cities(tmp_path, ["London"], min_images_per_place=1)
    assert len(only_london.places) == 3 and len(only_london.images) == 5
    assert [len(p) for p in gsv_cities(tmp_path, ["London"], min_images_per_place=2).places] == [2, 2]


def test_bad_trees_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected <root>/Dataframes/<City>.csv"):
        gsv_cities(tmp_path)
    write_city(tmp_path, "London", LONDON, missing={"London_0000001_2012_01_005_51.51_-0.13_pYa.jpg"})
    with pytest.raises(ValueError, match=r"\['Paris'\] not in .*available: \['London'\]"):
        gsv_cities(tmp_path, ["Paris"])
    with pytest.raises(FileNotFoundError, match="1 of 4 GSV-Cities .* images are missing, e.g. .*pYa.jpg"):
        gsv_cities(tmp_path, min_images_per_place=2)
    assert len(gsv_cities(tmp_path, min_images_per_place=2, check_files=False).images) == 4
    with pytest.raises(ValueError, match="no place has 5 or more images"):
        gsv_cities(tmp_path, min_images_per_place=5)
    (tmp_path / "Dataframes" / "Rome.csv").write_text(
        ",".join(GSV_COLUMNS) + "\n" + ",".join(LONDON[0][:3] + ("north",) + LONDON[0][4:]) + "\n")
    with pytest.raises(ValueError, match=r"Rome.csv:2: column 'northdeg': 'north' is not an integer"):
        gsv_cities(tmp_path, ["Rome"], min_images_per_place=1)
    (tmp_path / "Dataframes" / "Oslo.csv").write_text("place_id,year,month\n1,2,3\n")
    with pytest.raises(ValueError, match="missing column"):
        gsv_cities(tmp_path, ["Oslo"])
