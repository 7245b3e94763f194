"""build-map from an image folder and from a bag of the same images gives the same map."""

import numpy as np
import pytest

from structvpr_core.cli import main
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.data.images import read_rgb
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity

RANGE = "29000:29110"  # 12 test-split frames
FRAMES = range(29000, 29120, 10)


@pytest.fixture(scope="module")
def maps(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build_map")
    summer = shared / "data/nordland64/summer"
    model = ["--model", "random-mobilenetv2", "--resize", "64x32", "--device", "cpu"]
    assert main(["build-map", *model, "--images", str(summer), "--nordland-poses", "--frame-range", RANGE,
                 "--out", str(tmp / "from_folder"), "--with-features", "--max-features", "200"]) == 0
    assert main(["make-bag", "--images", str(summer), "--nordland-poses", "--frame-range", RANGE,
                 "--out", str(tmp / "summer.bag")]) == 0
    assert main(["build-map", *model, "--bag", str(tmp / "summer.bag"), "--out", str(tmp / "from_bag"),
                 "--with-features", "--max-features", "200"]) == 0
    return tmp, summer


def test_folder_and_bag_maps_hold_the_same_keyframes(maps, shared):
    tmp, summer = maps
    encoder = load_encoder("random-mobilenetv2", "cpu", (64, 32))
    identity = ModelIdentity.of_encoder(encoder, "random-mobilenetv2")
    a = MapDatabase.load(tmp / "from_folder", expect_model=identity)
    b = MapDatabase.load(tmp / "from_bag", expect_model=identity)
    assert len(a) == len(b) == len(FRAMES)
    assert np.array_equal(a.stamps_ns, b.stamps_ns)
    assert np.array_equal(a.poses, b.poses) and np.array_equal(a.poses[:, 0], list(FRAMES))
    assert a.keyframe(3).source == "images-29030.png" and b.keyframe(3).source == "/camera/image_raw#3"
    # --with-features stored an ORB record per keyframe (64x32 is below ORB's 31-pixel
    # patch, so these frames have few or no keypoints; test_map_database checks contents)
    assert all(a.keyframe(i).features is not None and b.keyframe(i).features is not None for i in range(len(a)))
    assert a.keyframe(0).features.image_size == (64, 32)

    # Descriptors: the stored vectors answer every query identically, and each summer
    # image finds itself with similarity 1 (so the stored vector is its descriptor).
    summer_desc = encoder.encode([read_rgb(summer / f"images-{f:05d}.png") for f in FRAMES])
    winter_desc = encoder.encode([read_rgb(shared / f"data/nordland64/winter/images-{f:05d}.png") for f in FRAMES])
    for q in np.concatenate([summer_desc, winter_desc]):
        ra, rb = a.query(q, 5), b.query(q, 5)
        assert [i for i, _ in ra] == [i for i, _ in rb]
        assert np.allclose([s for _, s in ra], [s for _, s in rb], atol=1e-6)
    for i, q in enumerate(summer_desc):
        best_id, best_score = a.query(q, 1)[0]
        assert best_id == i and best_score == pytest.approx(1.0, abs=1e-4)


def test_csv_stamps_are_kept(shared, tmp_path):
    csv = tmp_path / "poses.csv"
    csv.write_text("image,x,y,stamp\n" + "".join(f"images-{f:05d}.png,{f},0,{100 + i * 0.5}\n"
                                                 for i, f in enumerate(FRAMES[:3])))
    assert main(["build-map", "--model", "raw-pixel", "--images", str(shared / "data/nordland64/winter"),
                 "--poses", str(csv), "--out", str(tmp_path / "m")]) == 0
    db = MapDatabase.load(tmp_path / "m")
    assert db.stamps_ns.tolist() == [100_000_000_000, 100_500_000_000, 101_000_000_000]


def test_bad_arguments_fail_with_one_line(maps, capsys, tmp_path):
    bag_dir = maps[0] / "summer.bag"
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(bag_dir), "--topic", "/nope",
                 "--out", str(tmp_path / "m")]) == 2
    assert "no topic '/nope' (topics: /camera/image_raw [sensor_msgs/msg/Image], /odom" in capsys.readouterr().err
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(bag_dir), "--nordland-poses",
                 "--out", str(tmp_path / "m")]) == 2
    assert "apply to --images" in capsys.readouterr().err
    assert main(["build-map", "--model", "no-such-model", "--bag", str(bag_dir), "--out", str(tmp_path / "m")]) == 2
    assert "neither a checkpoint file nor a baseline" in capsys.readouterr().err
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(tmp_path / "missing.bag"),
                 "--out", str(tmp_path / "m")]) == 2
    assert "bag not found" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
