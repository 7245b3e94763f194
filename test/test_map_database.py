"""MapDatabase on disk with real faiss and real Nordland descriptors/ORB features."""

import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.loop_closure.geometry import extract_features
from structvpr_core.data.images import read_rgb
from structvpr_core.retrieval.map_database import (
    MapDatabase,
    MapError,
    MapMismatchError,
    ModelIdentity,
    open_map,
    remove_save_leftovers,
)

FRAMES = range(29000, 29200, 10)  # 20 consecutive test-split places
STEP_NS = 100_000_000  # 10 Hz


@pytest.fixture(scope="module")
def nordland(shared):
    images = [read_rgb(shared / f"data/nordland64/summer/images-{f:05d}.png") for f in FRAMES]
    encoder = RawPixelEncoder()
    return encoder, images, encoder.encode(images)


def _build(encoder, images, desc) -> MapDatabase:
    db = MapDatabase(ModelIdentity(encoder.name, encoder.dim))
    for i, (img, d) in enumerate(zip(images, desc)):
        # every other keyframe has a pose / ORB features (on an 8x upscale: 64x32 is too small for ORB)
        pose = [float(FRAMES[i]), 0, 0, 0, 0, 0, 1] if i % 2 == 0 else None
        big = cv2.resize(img, (512, 256), interpolation=cv2.INTER_NEAREST)
        feats = extract_features(big, 500) if i % 2 == 1 else None
        assert db.add(d, i * STEP_NS, "camera", pose=pose, features=feats, source=f"images-{FRAMES[i]:05d}.png") == i
    return db


def test_query_returns_self_first_and_excludes_recent_keyframes_exactly(nordland):
    encoder, images, desc = nordland
    db = _build(encoder, images, desc)
    assert len(db) == 20
    top = db.query(desc[15], k=3)
    assert top[0][0] == 15 and top[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)

    # Keyframes 11..19 are newer than the cut-off: with 11 older ones left, k=5 still gives 5.
    cutoff = 10 * STEP_NS
    got = db.query(desc[15], k=5, exclude_newer_than_ns=cutoff)
    assert len(got) == 5 and all(i <= 10 for i, _ in got)
    # same answer as brute force over the allowed keyframes
    scores = desc[:11] @ desc[15]
    assert [i for i, _ in got] == list(np.argsort(-scores)[:5])
    assert len(db.query(desc[15], k=50, exclude_newer_than_ns=cutoff)) == 11
    assert db.query(desc[15], k=3, exclude_newer_than_ns=-1) == []


def test_save_load_roundtrip_keeps_everything(nordland, tmp_path):
    encoder, images, desc = nordland
    db = _build(encoder, images, desc)
    db.save(tmp_path / "map")
    assert sorted(os.listdir(tmp_path)) == ["map"]  # no temp dirs left behind
    loaded = MapDatabase.load(tmp_path / "map", expect_model=ModelIdentity(encoder.name, encoder.dim))
    assert len(loaded) == 20 and loaded.model == db.model
    for i in range(20):
        a, b = db.keyframe(i), loaded.keyframe(i)
        assert (a.id, a.stamp_ns, a.frame_id, a.source) == (b.id, b.stamp_ns, b.frame_id, b.source)
        assert (a.pose is None) == (b.pose is None) and (a.pose is None or np.array_equal(a.pose, b.pose))
        assert (a.features is None) == (b.features is None)
        if a.features is not None:
            assert len(a.features) > 30  # real ORB features were stored, not an empty placeholder
            assert np.array_equal(a.features.keypoints, b.features.keypoints)
            assert np.array_equal(a.features.descriptors, b.features.descriptors)
            assert a.features.image_size == b.features.image_size == (512, 256)
    for i in (0, 7, 19):
        assert loaded.query(desc[i], 4) == db.query(desc[i], 4)
    # a loaded map keeps growing with sequential ids, and reset starts over
    assert loaded.add(desc[3], 99 * STEP_NS, "camera") == 20
    loaded.reset()
    assert len(loaded) == 0 and loaded.query(desc[0], 1) == []
    assert loaded.add(desc[0], 0, "camera") == 0


def test_model_mismatch_names_both_models(nordland, tmp_path):
    encoder, images, desc = nordland
    _build(encoder, images[:3], desc[:3]).save(tmp_path / "map")
    with pytest.raises(MapMismatchError) as err:
        MapDatabase.load(tmp_path / "map", expect_model=ModelIdentity("student", 448, "ab" * 32))
    msg = str(err.value)
    assert encoder.name in msg and "2048-d" in msg and "'student' (448-d" in msg
    # same name, different checkpoint weights -> refused; renamed checkpoint, same weights -> accepted
    MapDatabase(ModelIdentity("student", 4, "aa" * 32)).save(tmp_path / "ckpt_map")
    with pytest.raises(MapMismatchError):
        MapDatabase.load(tmp_path / "ckpt_map", expect_model=ModelIdentity("student", 4, "bb" * 32))
    assert len(MapDatabase.load(tmp_path / "ckpt_map", expect_model=ModelIdentity("renamed", 4, "aa" * 32))) == 0
    # same weights fed another input size -> unrelated descriptors -> refused
    MapDatabase(ModelIdentity("random", 4, None, (640, 480))).save(tmp_path / "sized_map")
    with pytest.raises(MapMismatchError, match="input 640x480.*input 64x32"):
        MapDatabase.load(tmp_path / "sized_map", expect_model=ModelIdentity("random", 4, None, (64, 32)))


def test_bad_input_is_rejected_with_clear_errors(nordland):
    encoder, _, desc = nordland
    db = MapDatabase(ModelIdentity(encoder.name, encoder.dim))
    with pytest.raises(ValueError, match="dim 448 does not match"):
        db.add(np.ones(448, np.float32) / np.sqrt(448), 0, "camera")
    with pytest.raises(ValueError, match="not L2-normalised"):
        db.add(desc[0] * 3, 0, "camera")
    with pytest.raises(ValueError, match="pose must be 7 numbers"):
        db.add(desc[0], 0, "camera", pose=[1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        db.add(desc[0], 0, "camera", pose=[np.nan, 0, 0, 0, 0, 0, 1])
    assert len(db) == 0  # nothing half-added
    with pytest.raises(KeyError, match="no keyframe with id 0"):
        db.keyframe(0)


def test_corrupt_or_missing_files_give_clear_errors(nordland, tmp_path):
    encoder, images, desc = nordland
    _build(encoder, images[:4], desc[:4]).save(tmp_path / "map")
    with pytest.raises(FileNotFoundError, match="map directory not found"):
        MapDatabase.load(tmp_path / "nothing")

    corrupt = tmp_path / "map" / "keyframes.npz"
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(MapError, match="keyframes.npz is corrupt"):
        MapDatabase.load(tmp_path / "map")

    (tmp_path / "map" / "index.faiss").unlink()
    with pytest.raises(MapError, match="index.faiss is missing"):
        MapDatabase.load(tmp_path / "map")

    (tmp_path / "map" / "meta.json").write_text("{not json")
    with pytest.raises(MapError, match="meta.json: corrupt"):
        MapDatabase.load(tmp_path / "map")

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(MapError, match="not a map directory"):
        MapDatabase(ModelIdentity("m", 4)).save(tmp_path / "photos")
    assert (tmp_path / "photos" / "holiday.jpg").is_file()


def test_failed_save_leaves_previous_map_intact(nordland, tmp_path, monkeypatch):
    encoder, images, desc = nordland
    _build(encoder, images[:5], desc[:5]).save(tmp_path / "map")
    bigger = _build(encoder, images, desc)

    real_write = MapDatabase._write_files

    def disk_full(self, out):
        real_write(self, out)  # everything written ...
        raise OSError(28, "No space left on device")  # ... but then the device fills up

    monkeypatch.setattr(MapDatabase, "_write_files", disk_full)
    with pytest.raises(OSError, match="No space left"):
        bigger.save(tmp_path / "map")
    assert sorted(os.listdir(tmp_path)) == ["map"]  # temporary directory removed
    assert len(MapDatabase.load(tmp_path / "map")) == 5


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import structvpr_core.retrieval.map_database as m

    where = sys.argv[2]
    if where == "before_swap":
        m._swap_in = lambda tmp, target: os._exit(3)
    else:  # between moving the old map aside and moving the new one in
        real_rename = os.rename
        def rename(src, dst):
            real_rename(src, dst)
            if ".previous-" in str(dst):
                os._exit(3)
        m.os.rename = rename
    db = m.MapDatabase.load(sys.argv[1])
    db.add(np.full(db.model.dim, db.model.dim ** -0.5, np.float32), 123, "camera")
    db.save(sys.argv[1])
""")


def interrupt_save(map_dir, where: str) -> None:
    """A process loads the map at ``map_dir``, adds a keyframe and dies saving it (``where``)."""
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(map_dir), where],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr  # the process really died mid-save


@pytest.mark.parametrize("where", ["before_swap", "between_renames"])
def test_crash_during_save_never_leaves_a_half_map(nordland, tmp_path, where):
    encoder, images, desc = nordland
    _build(encoder, images[:5], desc[:5]).save(tmp_path / "map")
    interrupt_save(tmp_path / "map", where)
    if where == "before_swap":
        assert len(MapDatabase.load(tmp_path / "map")) == 5  # old map untouched
    else:
        # no map at the path, but the error says where the complete previous map is
        with pytest.raises(FileNotFoundError, match="previous map at .*previous-") as err:
            MapDatabase.load(tmp_path / "map")
        leftover = err.value.args[0].split("previous map at ")[1].split(":")[0]
        os.rename(leftover, tmp_path / "map")
        assert len(MapDatabase.load(tmp_path / "map")) == 5


def test_open_map_loads_creates_or_refuses_with_the_reason(nordland, tmp_path):
    encoder, images, desc = nordland
    identity = ModelIdentity(encoder.name, encoder.dim)
    fresh = open_map(tmp_path / "new", identity, create=True)
    assert len(fresh) == 0 and not (tmp_path / "new").exists()  # nothing written until a save
    with pytest.raises(MapError, match="holds no map"):
        open_map(tmp_path / "new", identity, create=False)
    _build(encoder, images[:5], desc[:5]).save(tmp_path / "map")
    assert len(open_map(tmp_path / "map", identity, create=False)) == 5
    with pytest.raises(MapMismatchError):
        open_map(tmp_path / "map", ModelIdentity("other", encoder.dim), create=True)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(MapError, match="exists and is not a map directory"):
        open_map(tmp_path / "photos", identity, create=True)


@pytest.mark.parametrize("create", [True, False])
def test_open_map_refuses_a_save_interrupted_between_its_renames(nordland, tmp_path, create):
    encoder, images, desc = nordland
    identity = ModelIdentity(encoder.name, encoder.dim)
    _build(encoder, images[:5], desc[:5]).save(tmp_path / "map")
    interrupt_save(tmp_path / "map", "between_renames")
    # an empty map here would replace the previous one at the next save
    with pytest.raises(MapError, match=r"interrupted save left the previous map at .*\.map\.previous-.*: rename it to") as err:
        open_map(tmp_path / "map", identity, create=create)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and all(n.startswith((".map.previous-", ".map.saving-")) for n in leftovers)
    # the recovery step the message names works, and the now-stale new save is removed on open
    os.rename(err.value.args[0].split("previous map at ")[1].split(":")[0], tmp_path / "map")
    assert len(open_map(tmp_path / "map", identity, create=create)) == 5
    assert sorted(os.listdir(tmp_path)) == ["map"]


def test_stale_save_folders_are_removed_by_open_and_by_the_next_save(nordland, tmp_path):
    encoder, images, desc = nordland
    identity = ModelIdentity(encoder.name, encoder.dim)
    _build(encoder, images[:5], desc[:5]).save(tmp_path / "map")
    interrupt_save(tmp_path / "map", "before_swap")
    assert any(n.startswith(".map.saving-") for n in os.listdir(tmp_path))  # a whole map's worth of files
    assert len(open_map(tmp_path / "map", identity, create=True)) == 5
    assert sorted(os.listdir(tmp_path)) == ["map"]

    interrupt_save(tmp_path / "map", "before_swap")
    _build(encoder, images[:6], desc[:6]).save(tmp_path / "map")
    assert sorted(os.listdir(tmp_path)) == ["map"]
    (tmp_path / "other").mkdir()  # leftovers of another map beside it are not touched
    (tmp_path / ".other.saving-1234abcd").mkdir()
    assert remove_save_leftovers(tmp_path / "map") == []
    assert (tmp_path / ".other.saving-1234abcd").is_dir()


def _rewrite(map_dir, name: str, write) -> None:
    """Replace one map file by ``write(path)`` and re-hash it in meta.json, as a tool that edits maps
    would: only the value checks, not the content hashes, stand between the file and the node."""
    import json

    from structvpr_core.io_utils import file_sha256

    write(map_dir / name)
    meta = json.loads((map_dir / "meta.json").read_text())
    meta["sha256"][name] = file_sha256(map_dir / name)
    (map_dir / "meta.json").write_text(json.dumps(meta))


def _rewrite_index(map_dir, vectors) -> None:
    import faiss

    from structvpr_core.retrieval.index import DescriptorIndex

    def write(path):
        index = DescriptorIndex(vectors.shape[1])
        index._index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.arange(len(vectors), dtype=np.int64))
        assert isinstance(index._index, faiss.IndexIDMap2)
        index.save(path)

    _rewrite(map_dir, "index.faiss", write)


def _rewrite_keyframes(map_dir, **changes) -> None:
    def write(path):
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays.update(changes)
        np.savez(path.with_suffix(""), **arrays)  # np.savez appends .npz

    _rewrite(map_dir, "keyframes.npz", write)


@pytest.mark.parametrize("damage, message", [
    ("scaled", r"index.faiss: descriptors: 20 row\(s\) not L2-normalised \(e.g. row 0 has norm 100"),
    ("nan_row", r"index.faiss: descriptors: contain NaN"),
    ("zero_row", r"index.faiss: descriptors: 1 row\(s\) not L2-normalised \(e.g. row 3 has norm 0.0000"),
    ("nan_stamp", r"keyframes.npz: 1 negative stamps \(e.g. keyframe 2: -9223372036854775808 ns"),
    ("string_stamps", r"keyframes.npz 'stamps_ns' holds <U\d+, expected integer nanoseconds"),
    ("inf_pose", r"keyframes.npz: 1 poses are neither unknown .* \(e.g. keyframe 0: \[inf"),
    ("zero_quaternion", r"keyframes.npz: 1 poses are neither unknown .* \(e.g. keyframe 4:"),
    ("string_dim", r"meta.json: invalid model identity .*'model.dim' is '400' \(str\), expected int"),
    ("features_3d", r"is inconsistent: features.npz keypoints must be float32 \(K, 2\) and orb descriptors uint8 "
                    r"\(K, 32\), got float32 \(\d+, 3\)"),
])
def test_a_map_with_values_no_save_writes_is_refused_naming_the_file(nordland, tmp_path, damage, message):
    import json
    encoder, images, desc = nordland
    map_dir = tmp_path / "map"
    _build(encoder, images, desc).save(map_dir)
    MapDatabase.load(map_dir)  # intact: loads
    with np.load(map_dir / "keyframes.npz") as kf:
        stamps, poses = kf["stamps_ns"].copy(), kf["poses"].copy()
    if damage == "scaled":
        _rewrite_index(map_dir, desc * 100)
    elif damage == "nan_row":
        _rewrite_index(map_dir, np.where(np.arange(len(desc))[:, None] == 5, np.nan, desc))
    elif damage == "zero_row":
        _rewrite_index(map_dir, np.where(np.arange(len(desc))[:, None] == 3, 0.0, desc))
    elif damage == "nan_stamp":
        with np.errstate(invalid="ignore"):  # what a NaN stamp becomes in an int64 array
            stamps[2] = np.array(np.nan).astype(np.int64)
        _rewrite_keyframes(map_dir, stamps_ns=stamps)
    elif damage == "string_stamps":
        _rewrite_keyframes(map_dir, stamps_ns=stamps.astype(str))
    elif damage == "inf_pose":
        poses[0, 0] = np.inf
        _rewrite_keyframes(map_dir, poses=poses)
    elif damage == "zero_quaternion":
        poses[4, 3:] = 0.0
        _rewrite_keyframes(map_dir, poses=poses)
    elif damage == "features_3d":
        def write(path):
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
            arrays["keypoints"] = np.zeros((len(arrays["keypoints"]), 3), np.float32)
            np.savez(path.with_suffix(""), **arrays)

        _rewrite(map_dir, "features.npz", write)
    elif damage == "string_dim":
        meta = json.loads((map_dir / "meta.json").read_text())
        meta["model"]["dim"] = "400"
        (map_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MapError, match=message) as raised:
        MapDatabase.load(map_dir)
    assert str(map_dir) in str(raised.value)


def test_a_map_dir_that_is_a_file_is_named_as_such(nordland, tmp_path):
    encoder, _, _ = nordland
    (tmp_path / "map").write_text("not a map")
    for create in (False, True):
        with pytest.raises(MapError, match=f"{tmp_path / 'map'} (is a file, not a map directory|exists and is not)"):
            open_map(tmp_path / "map", ModelIdentity(encoder.name, encoder.dim), create=create)
