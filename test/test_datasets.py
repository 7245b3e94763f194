"""Dataset readers (structvpr_core.data.datasets) and image loading (structvpr_core.data.images).

Nordland tests use the real nordland64 copy in shared/data; the other layouts are
built on disk in tmp_path with real (tiny) image files and CSVs shaped like the
originals.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from structvpr_core.data.datasets import (GARDENSPOINT_NEGATIVE_MARGIN, GARDENSPOINT_SPLITS, GRIEF_SPLITS,
                                          NORDLAND64_SPLITS, PlaceSet, aligned_folders, csv_poses, gardenspoint,
                                          grief_seasons, grief_site, heading_difference_deg, load_place_set,
                                          msls_city, nordland64, pitts30k, radius_neighbors, utm_folders)
from structvpr_core.data.images import read_rgb


@pytest.fixture(scope="module")
def nordland_root(shared):  # `shared` (conftest.py) fails loudly when the real data is absent
    root = shared / "data" / "nordland64"
    if not (root / "summer").is_dir() or not (root / "winter").is_dir():
        pytest.fail(f"real test data incomplete: expected {root}/summer and {root}/winter")
    return root


@pytest.fixture(scope="module")
def nordland_sets(nordland_root):
    return {split: nordland64(nordland_root, split) for split in NORDLAND64_SPLITS}


def write_image(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((4, 6, 3), value, np.uint8))
    return path


def ids_of(place_set, indices):
    return set(place_set.db_meta["place_id"][indices].tolist())


# ---------------------------------------------------------------- (a) Nordland, real data


def test_nordland64_split_sizes_follow_frame_ranges(nordland_sets):
    total = 0
    for split, (lo, hi) in NORDLAND64_SPLITS.items():
        ps = nordland_sets[split]
        expected = (hi - lo) // 10 + 1  # every 10th frame, both ends inclusive
        assert len(ps.database) == len(ps.queries) == expected, split
        assert ps.name == f"nordland64-{split}"
        assert all(p.parent.name == "summer" for p in ps.database)
        assert all(p.parent.name == "winter" for p in ps.queries)
        for meta in (ps.db_meta, ps.q_meta):
            ids = meta["place_id"]
            assert ids[0] == lo and ids[-1] == hi and (np.diff(ids) == 10).all()
        assert ps.num_queries_with_match() == expected
        total += expected
    assert (len(NORDLAND64_SPLITS), total) == (3, 3427)  # 01500..35760, the whole copy


def test_nordland64_hard_ground_truth_is_the_same_frame(nordland_sets):
    for ps in nordland_sets.values():
        for q, hard in zip(ps.queries, ps.hard_positives):
            assert hard.shape == (1,)
            assert ps.database[hard[0]].name == q.name  # winter/images-N <-> summer/images-N


def test_nordland64_soft_ground_truth_is_one_file_each_side(nordland_sets):
    ps = nordland_sets["test"]
    q_ids = ps.q_meta["place_id"]
    assert ids_of(ps, ps.positives[100]) == {q_ids[100] - 10, q_ids[100], q_ids[100] + 10}
    assert ids_of(ps, ps.positives[0]) == {29000, 29010}  # split start: no frame 28990 in test
    assert ids_of(ps, ps.positives[-1]) == {35750, 35760}
    val = nordland_sets["val"]
    assert 23990 not in ids_of(val, val.positives[0])  # splits never leak into each other


def test_nordland64_non_negatives_cover_the_100_frame_margin(nordland_sets):
    ps = nordland_sets["val"]
    db_ids = ps.db_meta["place_id"]
    for q_id, pos, non_neg in zip(ps.q_meta["place_id"], ps.positives, ps.non_negatives):
        assert set(pos.tolist()) <= set(non_neg.tolist())
        assert set(db_ids[non_neg].tolist()) == set(db_ids[np.abs(db_ids - q_id) <= 100].tolist())
    middle = len(ps.queries) // 2
    q_id = ps.q_meta["place_id"][middle]
    assert len(ps.non_negatives[middle]) == 21
    assert q_id + 110 not in ids_of(ps, ps.non_negatives[middle])


def test_aligned_folders_frame_range_filter(nordland_root):
    ps = aligned_folders(nordland_root / "summer", nordland_root / "winter", soft_tolerance=10,
                         frame_range=(2000, 2100))
    assert [p.name for p in ps.queries] == [f"images-{n:05d}.png" for n in range(2000, 2101, 10)]
    assert ids_of(ps, ps.positives[0]) == {2000, 2010}
    with pytest.raises(ValueError, match=r"no images with place id in \[0, 1000\]"):
        aligned_folders(nordland_root / "summer", nordland_root / "winter", frame_range=(0, 1000))
    with pytest.raises(ValueError, match="lo <= hi"):
        aligned_folders(nordland_root / "summer", nordland_root / "winter", frame_range=(2100, 2000))
    with pytest.raises(ValueError, match="split must be one of"):
        nordland64(nordland_root, "winter")


def test_nordland64_images_load_as_rgb(nordland_sets):
    ps = nordland_sets["test"]
    rgb = read_rgb(ps.queries[0])
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8


# ---------------------------------------------------------------- Gardens Point and GRIEF, real data


def test_gardenspoint_splits_ground_truth_and_gaps(shared):
    root = shared / "data" / "gardenspoint"
    sets = {split: gardenspoint(root, split, "day_right", "night_right") for split in GARDENSPOINT_SPLITS}
    for split, (lo, hi) in GARDENSPOINT_SPLITS.items():
        ps = sets[split]
        assert len(ps.database) == len(ps.queries) == hi - lo + 1
        assert ps.q_meta["place_id"][0] == lo and ps.q_meta["place_id"][-1] == hi
        assert {p.parent.name for p in ps.database} == {"day_right"}
        assert {p.parent.name for p in ps.queries} == {"night_right"}
    test = sets["test"]
    assert test.name == "gardenspoint-test-night_right->day_right"
    assert ids_of(test, test.positives[10]) == set(range(183, 188))  # +-2 frames
    assert ids_of(test, test.hard_positives[10]) == {185}
    assert ids_of(test, test.positives[0]) == {175, 176, 177}  # the split edge is not crossed
    # gaps between splits are wider than the non-negative margin: no train frame is near val/test
    starts = sorted(GARDENSPOINT_SPLITS.values())
    assert all(b[0] - a[1] > GARDENSPOINT_NEGATIVE_MARGIN for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="queries must be one of"):
        gardenspoint(root, "test", "day_right", "night_left")
    with pytest.raises(ValueError, match="both 'day_left'"):
        gardenspoint(root, "test", "day_left", "day_left")


def test_grief_season_protocol_and_site_split(shared):
    root = shared / "data" / "grief_seasons"
    assert not set(GRIEF_SPLITS["train"]) & set(GRIEF_SPLITS["test"])
    sets = grief_seasons(root, "test")
    assert len(sets) == 12  # stromovka, each monthly session once as the database
    for session, ps in enumerate(sets, start=1):
        assert ps.db_meta["session"].tolist() == [session] * 5
        assert ps.db_meta["place_id"].tolist() == [1, 2, 3, 4, 5]
        assert len(ps.queries) == 55 and session not in ps.q_meta["session"]
        assert {p.parent.parent.name for p in ps.database + ps.queries} == {"stromovka"}
        for q, pos in enumerate(ps.positives):
            assert ps.database[pos[0]].name[2:] == ps.queries[q].name[2:]  # SSPP.jpg: same PP
    train = grief_site(root, "michigan")  # all sessions against all: training positives
    assert len(train.database) == len(train.queries) == 60
    for q, (pos, non_neg) in enumerate(zip(train.positives, train.non_negatives)):
        assert q not in pos and q in non_neg and len(pos) == 11  # never its own positive
    with pytest.raises(ValueError, match="no val"):
        grief_seasons(root, "val")
    with pytest.raises(ValueError, match=r"sessions \[13\] are not all in"):
        grief_site(root, "michigan", (13,), (1,))


def test_grief_csv_errors(tmp_path):
    site = tmp_path / "site"
    write_image(site / "images" / "0101.jpg")
    for text, message in (("file,session,place\nimages/0101.jpg,1\n", "expected 3 fields"),
                          ("name,session,place\nimages/0101.jpg,1,1\n", "expected a header"),
                          ("file,session,place\nimages/0101.jpg,1.5,1\n", "not a positive integer"),
                          ("file,session,place\nimages/0101.jpg,1,1\nimages/0101.jpg,1,1\n", "listed twice"),
                          ("file,session,place\nimages/0102.jpg,1,1\n", "1 of 1 .* images are missing")):
        (site / "places_gt.csv").write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            grief_site(tmp_path, "site", (1,), (1,))
    with pytest.raises(FileNotFoundError, match="GRIEF ground truth not found"):
        grief_site(tmp_path, "nowhere")


# ---------------------------------------------------------------- (a) aligned folders, errors


def test_aligned_folders_errors_and_unmatched_queries(tmp_path, caplog):
    db, q = tmp_path / "db", tmp_path / "q"
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        aligned_folders(db, q)
    db.mkdir()
    (db / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no images"):
        aligned_folders(db, q)
    for n in (10, 20, 30):
        write_image(db / f"frame-{n:03d}.png")
    for n in (20, 500):
        write_image(q / f"frame-{n:03d}.png")
    with caplog.at_level(logging.WARNING, logger="structvpr_core.data.datasets"):
        ps = aligned_folders(db, q, soft_tolerance=10)
    assert [p.tolist() for p in ps.positives] == [[0, 1, 2], []]
    assert [p.tolist() for p in ps.hard_positives] == [[1], []]
    assert ps.num_queries_with_match() == 1
    assert "1 of 2 queries have no database match" in caplog.text
    write_image(tmp_path / "far" / "frame-900.png")
    with pytest.raises(ValueError, match="none of the 1 queries"):
        aligned_folders(db, tmp_path / "far", soft_tolerance=10)
    write_image(q / "snapshot.png")
    with pytest.raises(ValueError, match="cannot read a place id from 'snapshot.png'"):
        aligned_folders(db, q)
    (q / "snapshot.png").unlink()
    write_image(q / "other-0020.png")
    with pytest.raises(ValueError, match="place id 20 is used by more than one image"):
        aligned_folders(db, q)
    with pytest.raises(ValueError, match="hard_tolerance <= soft_tolerance"):
        aligned_folders(db, q, soft_tolerance=0, hard_tolerance=10)


# ---------------------------------------------------------------- geometry


def test_heading_difference_wraps_around_360():
    assert heading_difference_deg(350, 10) == 20
    assert heading_difference_deg(10, 350) == 20
    assert heading_difference_deg(359, 1) == 2
    assert heading_difference_deg(0, 180) == 180
    assert heading_difference_deg(90, -270) == 0
    np.testing.assert_allclose(heading_difference_deg(5.0, np.array([355.0, 185.0, 725.0])), [10, 180, 0])


def test_radius_neighbors_exact_at_10k_scale():
    rng = np.random.default_rng(0)
    origin = np.array([543000.0, 4178000.0])  # real UTM magnitudes: float32 would lose ~0.5 m
    db = origin + rng.uniform(0, 4000, (10000, 2))
    q = origin + rng.uniform(0, 4000, (10000, 2))
    indices, distances = radius_neighbors(q, db, 25.0)
    assert len(indices) == 10000
    brute = np.sqrt(((q[:300, None] - db[None]) ** 2).sum(-1))
    for i in range(300):
        expected = np.flatnonzero(brute[i] <= 25.0)
        np.testing.assert_array_equal(indices[i], expected)
        np.testing.assert_allclose(distances[i], brute[i, expected])
    assert sum(len(i) > 0 for i in indices) > 1000


# ---------------------------------------------------------------- (b) UTM-named folders


def utm_name(east, north, heading=""):
    # gmberton/VPR-datasets-downloader layout: fields 1, 2 = UTM east, north; 9 = heading.
    return f"@{east:010.2f}@{north:010.2f}@17@T@040.44000@-079.99000@pano@@{heading}@@@@@@.jpg"


def test_utm_folders_radius_boundary_and_heading(tmp_path):
    e0, n0 = 584000.0, 4477000.0
    db_points = [(e0, n0, 0), (e0 + 25.0, n0, 0), (e0 + 25.5, n0, 0), (e0 + 15.0, n0 + 20.0, 0),
                 (e0 + 15.01, n0 + 20.0, 0), (e0, n0 - 10.0, 180), (e0, n0 + 5.0, 10)]
    for e, n, h in db_points:
        write_image(tmp_path / "database" / utm_name(e, n, h))
    write_image(tmp_path / "queries" / utm_name(e0, n0, 350))
    write_image(tmp_path / "queries" / "sub" / utm_name(e0 + 5000, n0, 0))  # recursive, no match
    ps = utm_folders(tmp_path / "database", tmp_path / "queries")
    utm = ps.db_meta["utm"]

    def points(indices):
        return {(round(utm[i, 0] - e0, 3), round(utm[i, 1] - n0, 3)) for i in indices}

    assert points(ps.positives[0]) == {(0, 0), (25, 0), (15, 20), (0, -10), (0, 5)}  # 25 m inclusive
    assert ps.positives[1].size == 0 and ps.num_queries_with_match() == 1
    assert ps.hard_positives[0].tolist() == ps.positives[0].tolist()
    assert ps.q_meta["heading"].tolist() == [350.0, 0.0]

    turned = utm_folders(tmp_path / "database", tmp_path / "queries", max_angle_deg=40,
                         negative_radius_m=30)
    assert points(turned.positives[0]) == {(0, 0), (25, 0), (15, 20), (0, 5)}  # 350 vs 10: 20 deg
    assert (0, -10) in points(turned.non_negatives[0])  # facing away: not positive, not negative
    assert points(turned.non_negatives[0]) >= {(25.5, 0), (15.01, 20)}


def test_utm_folders_parses_real_names_and_rejects_bad_ones(tmp_path):
    name = "@0543256.96@4178906.94@10@S@037.76407@-122.51056@pano@@@@@@@@.jpg"
    write_image(tmp_path / "db" / name)
    write_image(tmp_path / "q" / name)
    ps = utm_folders(tmp_path / "db", tmp_path / "q")
    np.testing.assert_array_equal(ps.db_meta["utm"], [[543256.96, 4178906.94]])
    assert np.isnan(ps.db_meta["heading"][0])
    write_image(tmp_path / "q" / "@0543256.96@41789x6.94@10@S@.jpg")
    with pytest.raises(ValueError, match="utm_north.*'41789x6.94' is not a number"):
        utm_folders(tmp_path / "db", tmp_path / "q")
    write_image(tmp_path / "db" / "street.jpg")
    with pytest.raises(ValueError, match=r"street.jpg: expected a name like @<utm_east>"):
        utm_folders(tmp_path / "db", tmp_path / "q")


def test_pitts30k_layout(tmp_path):
    images = tmp_path / "images" / "test"
    write_image(images / "database" / utm_name(584000.0, 4477000.0))
    write_image(images / "database" / utm_name(584100.0, 4477000.0))
    write_image(images / "queries" / utm_name(584010.0, 4477010.0))
    ps = pitts30k(tmp_path, "test")
    assert ps.name == "pitts30k-test" and ps.positives[0].tolist() == [0]
    with pytest.raises(FileNotFoundError, match="images/val/database"):
        pitts30k(tmp_path, "val")
    with pytest.raises(ValueError, match="split must be"):
        pitts30k(tmp_path, "database")


# ---------------------------------------------------------------- (c) MSLS


def msls_key(rng):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    return "".join(rng.choice(list(alphabet), 22))


def write_msls_side(side_dir, rows, subtasks=None):
    """rows: (key, easting, northing, ca, pano, night). CSVs shaped like MSLS metadata."""
    side_dir.mkdir(parents=True)
    post = [",key,easting,northing,unique_cluster,control_panel,night,view_direction"]
    raw = [",key,lon,lat,ca,captured_at,pano"]
    seq = [",key,sequence_key,frame_number"]
    for i, (key, e, n, ca, pano, night) in enumerate(rows):
        post.append(f"{i},{key},{e},{n},{i // 3},False,{night},Forward")
        raw.append(f"{i},{key},12.5{i:02d}1,55.6{i:02d}7,{ca},2017-06-12 09:31:{i:02d},{pano}")
        seq.append(f"{i},{key},seqA,{i}")
        write_image(side_dir / "images" / f"{key}.jpg", value=10 * i)
    (side_dir / "postprocessed.csv").write_text("\n".join(post) + "\n")
    (side_dir / "raw.csv").write_text("\n".join(raw) + "\n")
    (side_dir / "seq_info.csv").write_text("\n".join(seq) + "\n")
    if subtasks is not None:
        lines = [",key,all,s2w,w2s,o2n,n2o,d2n,n2d"]
        lines += [f"{i},{row[0]},True,False,False,False,False,False,{flag}"
                  for i, (row, flag) in enumerate(zip(rows, subtasks))]
        (side_dir / "subtask_index.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def msls_root(tmp_path):
    rng = np.random.default_rng(1)
    e0, n0 = 723100.0, 6175600.0  # Copenhagen-ish UTM 32U
    db_rows = [(msls_key(rng), e0, n0, 15.0, False, False),          # 0: same spot, ca 15
               (msls_key(rng), e0, n0 + 1.0, 20.0, True, False),     # pano at the same spot
               (msls_key(rng), e0 + 20.0, n0, 190.0, False, True),   # 1: 20 m, facing away
               (msls_key(rng), e0 + 25.0, n0, 0.0, False, False),    # 2: exactly 25 m
               (msls_key(rng), e0 + 40.0, n0, 0.0, False, False)]    # 3: 40 m
    q_rows = [(msls_key(rng), e0, n0, 355.0, False, False),
              (msls_key(rng), e0, n0, 355.0, True, False),           # pano query: dropped
              (msls_key(rng), e0 + 900.0, n0, 0.0, False, True)]     # no match
    city = tmp_path / "train_val" / "cph"
    write_msls_side(city / "database", db_rows, subtasks=[True, True, True, True, True])
    write_msls_side(city / "query", q_rows, subtasks=[False, False, True])
    return tmp_path, db_rows, q_rows


def test_msls_city_positives_and_pano_exclusion(msls_root):
    root, db_rows, q_rows = msls_root
    ps = msls_city(root, "cph", split="train")
    assert ps.name == "msls-cph-train"
    assert [p.stem for p in ps.database] == [r[0] for r in db_rows if not r[4]]
    assert [p.stem for p in ps.queries] == [q_rows[0][0], q_rows[2][0]]
    assert all(p.parent.name == "images" and p.is_file() for p in ps.database + ps.queries)
    assert ps.positives[0].tolist() == [0, 1, 2]  # 25 m inclusive, heading ignored by default
    assert ps.positives[1].tolist() == []
    assert ps.non_negatives[0].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(ps.db_meta["utm"][2], [723125.0, 6175600.0])
    assert ps.db_meta["heading"].tolist() == [15.0, 190.0, 0.0, 0.0]
    assert ps.db_meta["night"].tolist() == [False, True, False, False]

    turned = msls_city(root, "cph", split="train", max_angle_deg=40.0, negative_radius_m=50.0)
    assert turned.positives[0].tolist() == [0, 2]  # 355 vs 15 and 355 vs 0 wrap; 190 is out
    assert turned.non_negatives[0].tolist() == [0, 1, 2, 3]


def test_msls_city_val_applies_subtask_index(msls_root):
    root, _, q_rows = msls_root
    assert len(msls_city(root, "cph", split="val").queries) == 2
    with pytest.raises(ValueError, match="none of the 1 queries"):
        msls_city(root, "cph", split="val", subtask="n2d")  # only the unmatched query is n2d
    with pytest.raises(ValueError, match="missing column.*'d2x'"):
        msls_city(root, "cph", split="val", subtask="d2x")


def test_msls_city_errors(msls_root):
    root, db_rows, _ = msls_root
    db_dir = root / "train_val" / "cph" / "database"
    with pytest.raises(ValueError, match="'train' or 'val'"):
        msls_city(root, "cph", split="test")
    with pytest.raises(FileNotFoundError, match="city folder not found.*train_val/sf"):
        msls_city(root, "sf")
    post = (db_dir / "postprocessed.csv").read_text()
    (db_dir / "postprocessed.csv").write_text(post.replace(",723125.0,6175600.0,", ",723125.0,61756OO.0,"))
    with pytest.raises(ValueError, match=r"postprocessed.csv:5: column 'northing': '61756OO.0' is not"):
        msls_city(root, "cph")
    (db_dir / "postprocessed.csv").write_text(post.replace("easting", "utm_e"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['easting'\]"):
        msls_city(root, "cph")
    (db_dir / "postprocessed.csv").write_text(post)
    raw = (db_dir / "raw.csv").read_text()
    (db_dir / "raw.csv").write_text(raw.replace(db_rows[2][0], "someOtherKey"))
    with pytest.raises(ValueError, match=f"key '{db_rows[2][0]}' is not in .*raw.csv"):
        msls_city(root, "cph")
    (db_dir / "raw.csv").write_text(raw.replace(",False\n", ",maybe\n", 1))
    with pytest.raises(ValueError, match="column 'pano': 'maybe' is not True/False"):
        msls_city(root, "cph")
    (db_dir / "raw.csv").write_text(raw)
    (db_dir / "images" / f"{db_rows[0][0]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 4 .*database images are missing"):
        msls_city(root, "cph")
    (db_dir / "raw.csv").unlink()
    with pytest.raises(FileNotFoundError, match="CSV file not found: .*raw.csv"):
        msls_city(root, "cph")


# ---------------------------------------------------------------- (d) generic pose CSV


def test_csv_poses_relative_absolute_and_heading_wrap(tmp_path):
    write_image(tmp_path / "map" / "img" / "a.png")
    write_image(tmp_path / "map" / "img" / "b.png")
    write_image(tmp_path / "map" / "img" / "c.png")
    q_image = write_image(tmp_path / "elsewhere" / "q.png")
    (tmp_path / "map" / "db.csv").write_text(
        "image,x,y,heading,stamp\nimg/a.png,0,0,10,100.5\nimg/b.png,10,0,60,\nimg/c.png,26,0,10,102\n")
    (tmp_path / "q.csv").write_text(f"image,x,y,heading\n{q_image},0,0,350\n")
    ps = csv_poses(tmp_path / "map" / "db.csv", tmp_path / "q.csv")
    assert ps.database[0] == tmp_path / "map" / "img" / "a.png" and ps.queries[0] == q_image
    assert ps.positives[0].tolist() == [0, 1]
    np.testing.assert_array_equal(ps.db_meta["stamp"], [100.5, np.nan, 102.0])
    assert "stamp" not in ps.q_meta
    assert csv_poses(tmp_path / "map" / "db.csv", tmp_path / "q.csv",
                     max_angle_deg=30).positives[0].tolist() == [0]  # 350 vs 10 = 20 deg; vs 60 = 70

    (tmp_path / "q_noheading.csv").write_text(f"image,x,y,heading\n{q_image},0,0,\n")
    assert csv_poses(tmp_path / "map" / "db.csv", tmp_path / "q_noheading.csv").positives[0].tolist() == [0, 1]
    with pytest.raises(ValueError, match="needs headings, but 1 query images have none"):
        csv_poses(tmp_path / "map" / "db.csv", tmp_path / "q_noheading.csv", max_angle_deg=30)

    (tmp_path / "rooted.csv").write_text("image,x,y\nimg/a.png,1,1\n")
    ps = csv_poses(tmp_path / "rooted.csv", tmp_path / "rooted.csv", image_root=tmp_path / "map")
    assert ps.database == [tmp_path / "map" / "img" / "a.png"]
    assert np.isnan(ps.db_meta["heading"]).all()


@pytest.mark.parametrize("content, error, message", [
    ("image,x\na.png,0\n", ValueError, r"missing column\(s\) \['y'\]"),
    ("image,x,y\na.png,0,north\n", ValueError, r"bad.csv:2: column 'y': 'north' is not a number"),
    ("image,x,y\na.png,0,nan\n", ValueError, r"column 'y': 'nan' is not a finite number"),
    ("image,x,y\na.png,0\n", ValueError, r"bad.csv:2: expected 3 fields"),
    ("image,x,y\na.png,0,0,7\n", ValueError, r"bad.csv:2: expected 3 fields"),
    ("image,x,y\n", ValueError, "no data rows"),
    ("", ValueError, "empty file"),
    ("image,x,y\nmissing.png,0,0\n", FileNotFoundError, r"1 of 1 .*bad.csv images are missing"),
])
def test_csv_poses_bad_files(tmp_path, content, error, message):
    write_image(tmp_path / "a.png")
    (tmp_path / "good.csv").write_text("image,x,y\na.png,0,0\n")
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(error, match=message):
        csv_poses(tmp_path / "good.csv", tmp_path / "bad.csv")


def test_csv_poses_rejects_sets_without_any_match_and_bad_parameters(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "db.csv").write_text("image,x,y\na.png,0,0\n")
    (tmp_path / "q.csv").write_text("image,x,y\na.png,100,0\n")
    with pytest.raises(ValueError, match="none of the 1 queries has a database image"):
        csv_poses(tmp_path / "db.csv", tmp_path / "q.csv")
    with pytest.raises(ValueError, match="radius_m must be a positive number"):
        csv_poses(tmp_path / "db.csv", tmp_path / "db.csv", radius_m=0)
    with pytest.raises(ValueError, match="max_angle_deg must be in"):
        csv_poses(tmp_path / "db.csv", tmp_path / "db.csv", max_angle_deg=270)
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        csv_poses(tmp_path / "nope.csv", tmp_path / "q.csv")


# ---------------------------------------------------------------- factory, PlaceSet, images


def test_load_place_set(nordland_root, tmp_path):
    ps = load_place_set({"layout": "nordland64", "root": str(nordland_root), "split": "val"})
    assert isinstance(ps, PlaceSet) and len(ps.queries) == 500
    ps = load_place_set({"layout": "aligned_folders", "db_dir": str(nordland_root / "summer"),
                         "q_dir": str(nordland_root / "winter"), "frame_range": [1500, 1590]})
    assert len(ps.queries) == 10
    with pytest.raises(ValueError, match="unknown dataset layout 'tokyo247'; known: aligned_folders"):
        load_place_set({"layout": "tokyo247"})
    with pytest.raises(ValueError, match="layout 'nordland64': .*'radius_m'"):
        load_place_set({"layout": "nordland64", "radius_m": 25})


def test_place_set_validates_ground_truth():
    two = [np.array([0], np.int64), np.array([1], np.int64)]
    with pytest.raises(ValueError, match="positives has 2 entries for 1 queries"):
        PlaceSet("x", ["d0", "d1"], ["q0"], two, two[:1], two[:1])
    with pytest.raises(ValueError, match="sorted int64"):
        PlaceSet("x", ["d0"], ["q0"], [np.array([3], np.int64)], two[:1], two[:1])
    with pytest.raises(ValueError, match=r"db_meta\['utm'\] has 1 rows for 2 images"):
        PlaceSet("x", ["d0", "d1"], ["q0"], two[:1], two[:1], two[:1], db_meta={"utm": np.zeros((1, 2))})


def test_read_rgb_channel_order_grey_and_errors(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    rgb = read_rgb(tmp_path / "blue.png")
    assert rgb.shape == (2, 3, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((2, 3), 77, np.uint8))
    assert read_rgb(tmp_path / "grey.png").shape == (2, 3, 3)
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_rgb(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="image file is empty"):
        read_rgb(tmp_path / "empty.png")
    data = (tmp_path / "blue.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode image.*truncated.png"):
        read_rgb(tmp_path / "truncated.png")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ValueError, match="cannot decode image"):
        read_rgb(tmp_path / "text.jpg")
