"""build-map from an image folder and from a bag of the same images gives the same map."""

import cv2
import numpy as np
import pytest

from bag_helpers import write_image_bag
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
    identity = ModelIdentity.of_encoder(encoder)
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
    (tmp_path / "junk.bag").write_bytes(b"#ROSBAG V2.0\n" + bytes(100))
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(tmp_path / "junk.bag"),
                 "--out", str(tmp_path / "m")]) == 2
    assert "junk.bag: not a readable rosbag2 directory or ROS 1 bag" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- real ROS 1 bags, bad frames, no stamps

ROS1_BAGS = "data/ros1_bags"


def _raw_pixel_of(rgb: np.ndarray) -> np.ndarray:
    return load_encoder("raw-pixel", "cpu").encode([rgb])[0]


def test_ros1_bag_with_a_topic_named_without_slash_builds_a_map(shared, tmp_path):
    bag = shared / ROS1_BAGS / "fiducials_board_611.bag"  # topic "raspicam_node/camera/image/compressed"
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(bag),
                 "--topic", "/raspicam_node/camera/image/compressed", "--out", str(tmp_path / "m")]) == 0
    db = MapDatabase.load(tmp_path / "m")
    # the header stamp (10 min before the record time 1480227350.690993144) and the camera's frame id
    assert db.stamps_ns.tolist() == [1480227350_076296237]
    assert db.keyframe(0).frame_id == "raspicam" and np.isnan(db.poses).all()
    # the stored descriptor is the one of the JPEG as OpenCV decodes it (a real 1280x720 frame)
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        [(conn, _, raw)] = [m for m in reader.messages() if m[0].msgtype.endswith("CompressedImage")]
        jpeg = reader.deserialize(raw, conn.msgtype).data
    rgb = cv2.cvtColor(cv2.imdecode(np.asarray(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert rgb.shape == (720, 1280, 3)
    [(best, similarity)] = db.query(_raw_pixel_of(rgb), 1)
    assert best == 0 and similarity == pytest.approx(1.0, abs=1e-5)


def test_images_with_header_stamp_0_are_stored_with_their_record_time(shared, tmp_path, capsys):
    frames = [read_rgb(shared / f"data/nordland64/winter/images-{f:05d}.png") for f in FRAMES[:2]]
    recorded = [1494949708_531555891, 1494949708_631555891]
    write_image_bag(tmp_path / "b.bag", frames, [0, 0], recorded, topic="/image")
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(tmp_path / "b.bag"), "--topic", "/image",
                 "--out", str(tmp_path / "m")]) == 0
    assert MapDatabase.load(tmp_path / "m").stamps_ns.tolist() == recorded
    assert "2 image(s) with header stamp 0 stored with their bag record time" in capsys.readouterr().out


def test_a_featureless_image_is_left_out_of_the_map(shared, tmp_path, capsys):
    bag = shared / ROS1_BAGS / "rosnumpy_test.bag"  # /image rgb8 360x240 of random pixels: nothing to describe
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(bag), "--topic", "/image",
                 "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "no image could be added to the map" in err and "1 featureless image(s) left out, first: /image#0" in err
    assert not (tmp_path / "m").exists()
    # in a folder: the black frame is left out and counted, the real ones are kept
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(FRAMES[:3]):
        rgb = read_rgb(shared / f"data/nordland64/summer/images-{f:05d}.png")
        cv2.imwrite(str(folder / f"{i:03d}.png"), rgb * 0 if i == 1 else rgb)
    assert main(["build-map", "--model", "raw-pixel", "--images", str(folder), "--out", str(tmp_path / "m")]) == 0
    assert [MapDatabase.load(tmp_path / "m").keyframe(i).source for i in (0, 1)] == ["000.png", "002.png"]
    assert "1 featureless image(s) left out, first: 001.png: the 64x32 image is featureless (dark" in \
        capsys.readouterr().out


def test_a_bad_frame_is_named_by_its_stamp_or_skipped(shared, tmp_path, capsys):
    frames = [read_rgb(shared / f"data/nordland64/winter/images-{f:05d}.png") for f in FRAMES[:3]]
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes() for rgb in frames]
    stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(3)]
    bag = tmp_path / "bad.bag"  # a rosbag2 directory named like a ROS 1 file
    write_image_bag(bag, [jpegs[0], b"this is not a JPEG", jpegs[2]], stamps, stamps, topic="/cam/compressed")
    args = ["build-map", "--model", "raw-pixel", "--bag", str(bag), "--topic", "/cam/compressed"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "image #1 (header stamp 1700000000.100000000 s, recorded at 1700000000.100000000 s)" in err
    assert "--skip-invalid" in err and "Traceback" not in err and not (tmp_path / "m").exists()

    assert main([*args, "--skip-invalid", "--out", str(tmp_path / "m")]) == 0
    db = MapDatabase.load(tmp_path / "m")
    assert db.stamps_ns.tolist() == [stamps[0], stamps[2]] and [db.keyframe(i).source for i in (0, 1)] == [
        "/cam/compressed#0", "/cam/compressed#2"]
    assert "1 invalid image(s) skipped, first: image #1" in capsys.readouterr().out


def test_progress_is_plain_log_lines_when_not_a_terminal(maps, capsys, tmp_path):
    # capsys' stderr is not a terminal, as in a service log or CI
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(maps[0] / "summer.bag"),
                 "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines() == [line for line in err.splitlines() if line.startswith("building map: ")]
    assert err.splitlines()[-1].startswith("building map: done 12/12 img (100.0%)")


def test_build_map_from_images_loads_nothing_of_ros(shared, tmp_path):
    """The folder path lives in structvpr_core: no rclpy, no rosbags, no structvpr_ros."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from structvpr_core.cli import main\n"
        f"assert main(['build-map', '--model', 'raw-pixel', '--images', {str(shared / 'data/nordland64/summer')!r}, "
        f"'--frame-range', '29000:29010', '--out', {str(tmp_path / 'm')!r}]) == 0\n"
        "print('ROS modules:', sorted({m.split('.')[0] for m in sys.modules} & {'rclpy', 'rosbags', 'structvpr_ros'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "ROS modules: []" in out.stdout and len(MapDatabase.load(tmp_path / "m")) == 2


def test_bag_poses_are_the_odometry_nearest_each_image_within_the_offset(shared, tmp_path):
    frames = [read_rgb(shared / f"data/nordland64/summer/images-{f:05d}.png") for f in FRAMES[:3]]
    stamps = [1_700_000_000_000_000_000 + k * 1_000_000_000 for k in range(3)]
    # odometry 40 ms after each image, and one pose 0.5 s after the last image (too far from it)
    odometry = {s + 40_000_000: float(k) for k, s in enumerate(stamps[:2])} | {stamps[2] + 500_000_000: 2.0}
    write_image_bag(tmp_path / "b.bag", frames, stamps, stamps, topic="/cam/image", odometry=odometry)
    args = ["build-map", "--model", "raw-pixel", "--bag", str(tmp_path / "b.bag"), "--topic", "/cam/image"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 0  # default offset 0.1 s, as the node's
    poses = MapDatabase.load(tmp_path / "m").poses
    assert poses[:2, 0].tolist() == [0.0, 1.0] and np.isnan(poses[2]).all()
    assert main([*args, "--odom-max-offset", "0.01", "--out", str(tmp_path / "m2")]) == 0
    assert np.isnan(MapDatabase.load(tmp_path / "m2").poses).all()


def _run_cli(args, preexec_fn=None):
    import subprocess
    import sys

    from structvpr_core.paths import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "structvpr_core.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec_fn)


def _folder(shared, tmp_path, n=3):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(FRAMES[:n]):
        (folder / f"images-{f:05d}.png").write_bytes((shared / f"data/nordland64/summer/images-{f:05d}.png").read_bytes())
    return folder


@pytest.mark.parametrize("out, message", [
    ("file.txt", "--out {tmp}/file.txt is an existing file, not a directory"),
    ("file.txt/map", "--out {tmp}/file.txt/map: {tmp}/file.txt is a file, not a directory"),
    ("notamap", "--out {tmp}/notamap exists and is not a map directory (no meta.json)"),
])
def test_a_bad_out_is_refused_before_any_work(shared, tmp_path, capsys, out, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "notamap").mkdir()
    (tmp_path / "notamap" / "thesis.tex").write_text("x")
    folder = _folder(shared, tmp_path)
    # a model that does not exist: had the output check waited for the model, this would say "model"
    assert main(["build-map", "--model", "/nonexistent.pt", "--images", str(folder),
                 "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err


def test_a_read_only_out_is_refused_and_a_full_disk_named_at_the_save(shared, tmp_path):
    from fault_helpers import file_size_limit, without_root_file_override

    folder = _folder(shared, tmp_path)
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        run = _run_cli(["build-map", "--model", "raw-pixel", "--images", str(folder), "--out", str(parent / "m")],
                       preexec_fn=without_root_file_override)
    finally:
        parent.chmod(0o755)
    assert run.returncode == 2, run.stderr
    assert f"--out {parent / 'm'}: cannot write in {parent}: Permission denied" in run.stderr
    assert "Traceback" not in run.stderr and "building map" not in run.stderr  # before the work
    # the map's index (3 x 2048 floats = 24 KB) cannot be written under a 16 KB file-size limit
    run = _run_cli(["build-map", "--model", "raw-pixel", "--images", str(folder), "--out", str(tmp_path / "m")],
                   preexec_fn=file_size_limit(16384))
    assert run.returncode == 2, run.stderr
    assert f"writing the map to {tmp_path / 'm'} failed: File too large (disk full or file size limit" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "m").exists()
    assert not list(tmp_path.glob(".m.saving-*"))


def test_an_unreadable_image_is_named_or_skipped(shared, tmp_path):
    from fault_helpers import without_root_file_override

    folder = _folder(shared, tmp_path)
    bad = folder / f"images-{FRAMES[1]:05d}.png"
    bad.chmod(0o000)
    args = ["build-map", "--model", "raw-pixel", "--images", str(folder)]
    run = _run_cli([*args, "--out", str(tmp_path / "m")], preexec_fn=without_root_file_override)
    assert run.returncode == 2, run.stderr
    assert f"cannot read image file {bad}: Permission denied; leave such images out with --skip-invalid" in run.stderr
    assert "Traceback" not in run.stderr
    run = _run_cli([*args, "--skip-invalid", "--out", str(tmp_path / "m")], preexec_fn=without_root_file_override)
    assert run.returncode == 0, run.stderr
    assert f"1 unreadable image(s) skipped, first: cannot read image file {bad}" in run.stdout
    assert len(MapDatabase.load(tmp_path / "m")) == 2


def test_max_features_is_bounded(shared, tmp_path, capsys):
    folder = _folder(shared, tmp_path)
    # ORB allocates for nfeatures up front: 2e9 made every frame fail with std::bad_alloc
    assert main(["build-map", "--model", "raw-pixel", "--images", str(folder), "--with-features",
                 "--max-features", "2000000000", "--out", str(tmp_path / "m")]) == 2
    assert "--max-features must be in 1..100000, got 2000000000" in capsys.readouterr().err
