"""make-bag writes real rosbag2 files; read back with rosbags + rosbags-image (independent oracle)."""

import os

import cv2
import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.rosbag2 import Reader

from structvpr_core.cli import main
from structvpr_core.data.images import read_rgb
from structvpr_core.data.sequence import DEFAULT_START_S
from structvpr_ros.bag_io import typestore

FRAMES = list(range(29000, 29100, 10))  # 10 test-split frames


def _read_all(bag):
    store = typestore()
    out = {}
    with Reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, store.deserialize_cdr(raw, conn.msgtype)))
    return types, out


def _stamp(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_rgb8_bag_has_exact_pixels_stamps_and_track_poses(shared, tmp_path, storage):
    winter = shared / "data/nordland64/winter"
    bag = tmp_path / "winter.bag"
    assert main(["make-bag", "--images", str(winter), "--nordland-poses", "--frame-range", "29000:29090",
                 "--out", str(bag), "--storage", storage, "--rate", "4"]) == 0
    assert os.listdir(tmp_path) == ["winter.bag"]  # staging directory gone
    types, msgs = _read_all(bag)
    assert types == {"/camera/image_raw": "sensor_msgs/msg/Image", "/odom": "nav_msgs/msg/Odometry"}
    images, odom = msgs["/camera/image_raw"], msgs["/odom"]
    assert len(images) == len(odom) == len(FRAMES)
    for i, (frame, (log_ns, msg)) in enumerate(zip(FRAMES, images)):
        expected_ns = int(DEFAULT_START_S * 1e9) + i * 250_000_000  # 4 Hz
        assert log_ns == _stamp(msg) == expected_ns
        assert msg.encoding == "rgb8" and msg.header.frame_id == "camera"
        pixels = message_to_cvimage(msg, "rgb8")
        assert np.array_equal(pixels, read_rgb(winter / f"images-{frame:05d}.png"))
        pose_msg = odom[i][1]
        assert _stamp(pose_msg) == expected_ns
        assert pose_msg.pose.pose.position.x == frame and pose_msg.pose.pose.orientation.w == 1.0


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "png", "jpeg"])
def test_other_encodings_decode_to_the_same_picture(shared, tmp_path, encoding):
    summer = shared / "data/nordland64/summer"
    bag = tmp_path / "b"
    assert main(["make-bag", "--images", str(summer), "--frame-range", "29000:29040", "--out", str(bag),
                 "--encoding", encoding, "--storage", "mcap"]) == 0
    types, msgs = _read_all(bag)
    compressed = encoding in ("png", "jpeg")
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    assert types == {topic: "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"}
    assert len(msgs[topic]) == 5
    for frame, (_, msg) in zip(FRAMES, msgs[topic]):
        truth = read_rgb(summer / f"images-{frame:05d}.png")
        got = message_to_cvimage(msg, "rgb8" if encoding != "mono8" else "mono8")
        if encoding == "mono8":
            assert np.array_equal(got, cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY))
        elif encoding == "jpeg":  # lossy: close, not equal
            assert np.abs(got.astype(int) - truth).mean() < 4
        else:
            assert np.array_equal(got, truth)


def test_poses_csv_orientation_stamps_and_compressed_flag(shared, tmp_path, capsys):
    summer = shared / "data/nordland64/summer"
    csv = tmp_path / "poses.csv"
    rows = ["image,x,y,z,heading,stamp"] + [f"images-{f:05d}.png,{i * 2.5},{-i},1.5,90,{12.25 + i}"
                                             for i, f in enumerate(FRAMES[:3])]
    csv.write_text("\n".join(rows) + "\n")
    bag = tmp_path / "b"
    assert main(["make-bag", "--images", str(summer), "--poses", str(csv), "--out", str(bag), "--compressed",
                 "--odom-topic", "/gt"]) == 0
    types, msgs = _read_all(bag)
    assert types["/camera/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
    poses = [m.pose.pose for _, m in msgs["/gt"]]
    assert [(p.position.x, p.position.y, p.position.z) for p in poses] == [(0, 0, 1.5), (2.5, -1, 1.5), (5, -2, 1.5)]
    q = poses[0].orientation  # heading 90 deg = yaw about +z
    assert np.allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    # the CSV's stamps are used (log time and header) instead of synthetic ones
    images = msgs["/camera/image_raw/compressed"]
    assert [log for log, _ in images] == [_stamp(m) for _, m in images] == [12_250_000_000, 13_250_000_000,
                                                                            14_250_000_000]
    csv.write_text("image,x,y,stamp\nimages-29000.png,0,0,5\nimages-29010.png,0,0,5\n")
    assert main(["make-bag", "--images", str(summer), "--poses", str(csv), "--out", str(tmp_path / "c")]) == 2
    assert "stamps must increase: images-29010.png is not later than images-29000.png" in capsys.readouterr().err


def test_errors_are_one_line_and_leave_nothing_behind(shared, tmp_path, capsys):
    summer = shared / "data/nordland64/summer"
    # a corrupt image in the middle of the sequence fails the run after writing started
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in FRAMES[:4]:
        (folder / f"images-{f:05d}.png").write_bytes((summer / f"images-{f:05d}.png").read_bytes())
    (folder / "images-29020.png").write_bytes(b"not a png")
    out = tmp_path / "out" / "b"
    assert main(["make-bag", "--images", str(folder), "--out", str(out)]) == 2
    assert "cannot decode image" in capsys.readouterr().err
    assert os.listdir(tmp_path / "out") == []  # no half bag, no staging directory

    assert main(["make-bag", "--images", str(summer), "--frame-range", "5:1", "--out", str(out)]) == 2
    assert "start is after end" in capsys.readouterr().err
    assert main(["make-bag", "--images", str(summer), "--frame-range", "100:200", "--out", str(out)]) == 2
    assert "no frames" in capsys.readouterr().err
    out.mkdir()
    assert main(["make-bag", "--images", str(summer), "--frame-range", "29000:29000", "--out", str(out)]) == 2
    assert "exists already" in capsys.readouterr().err

    csv = tmp_path / "poses.csv"
    for content, message in (("image,x\nimages-29000.png,1\n", "missing column(s) ['y']"),
                             ("image,x,y,qx,qy,qz,qw\nimages-29000.png,0,0,0,0,0,2\n", "is not unit length"),
                             ("image,x,y\nimages-99999.png,0,0\n", "image not found"),
                             ("image,x,y\nimages-29000.png,0,north\n", "column 'y': 'north' is not a number")):
        csv.write_text(content)
        assert main(["make-bag", "--images", str(summer), "--poses", str(csv), "--out", str(tmp_path / "c")]) == 2
        assert message in capsys.readouterr().err


def _nordland_folder(shared, tmp_path, n=3):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in range(29000, 29000 + 10 * n, 10):
        (folder / f"images-{f:05d}.png").write_bytes((shared / f"data/nordland64/summer/images-{f:05d}.png").read_bytes())
    return folder


def _run_cli(args, preexec_fn=None):
    import subprocess
    import sys

    from structvpr_core.paths import REPO_ROOT

    return subprocess.run([sys.executable, "-m", "structvpr_core.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec_fn)


def test_make_bag_refuses_a_bad_out_first_and_names_a_full_disk(shared, tmp_path):
    from fault_helpers import file_size_limit

    folder = _nordland_folder(shared, tmp_path)
    (tmp_path / "file.txt").write_text("x")
    for out, message in [("file.txt", "is an existing file, not a directory"),
                         ("file.txt/b.bag", f"{tmp_path}/file.txt is a file, not a directory")]:
        run = _run_cli(["make-bag", "--images", str(folder), "--out", str(tmp_path / out)])
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    # sqlite3 on a "full disk" (every file capped at 8 KB; 3 images + the schema are more)
    run = _run_cli(["make-bag", "--images", str(folder), "--out", str(tmp_path / "b.bag")],
                   preexec_fn=file_size_limit(8192))
    assert run.returncode == 2, run.stderr
    assert f"writing the bag {tmp_path / 'b.bag'} failed:" in run.stderr and "disk full" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "b.bag").exists()
    assert not list(tmp_path.glob(".b.bag.writing-*"))


def test_make_bag_names_an_unreadable_image_or_skips_it_with_its_odometry(shared, tmp_path):
    from fault_helpers import without_root_file_override

    folder = _nordland_folder(shared, tmp_path)
    bad = folder / "images-29010.png"
    bad.chmod(0o000)
    args = ["make-bag", "--images", str(folder), "--nordland-poses"]
    run = _run_cli([*args, "--out", str(tmp_path / "a.bag")], preexec_fn=without_root_file_override)
    assert run.returncode == 2, run.stderr
    assert f"cannot read image file {bad}: Permission denied; leave such images out with --skip-invalid" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "a.bag").exists()
    run = _run_cli([*args, "--skip-invalid", "--out", str(tmp_path / "a.bag")], preexec_fn=without_root_file_override)
    assert run.returncode == 0, run.stderr
    assert "wrote 2 images" in run.stdout and "and 2 odometry messages" in run.stdout
    assert f"1 unreadable image(s) skipped, first: cannot read image file {bad}" in run.stdout
