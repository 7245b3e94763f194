"""LoopDetector with real faiss and real descriptors (raw-pixel on Nordland, ORB on CamVid)."""

import cv2
import numpy as np
import pytest

from structvpr_core.config import ConfigError, from_dict
from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.loop_closure.geometry import GeometryConfig, extract_features
from structvpr_core.data.images import read_rgb
from structvpr_core.loop_closure.candidates import NS_PER_S, KeyframeSelector, LoopClosureConfig, LoopDetector, PoseBuffer
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.retrieval.sequence import SequenceConfig

# Summer pass 33200..33400 (21 places) is the map; on winter 33240..33310 the raw-pixel
# baseline ranks the right place (+-1 frame) first for 8 queries in a row.
MAP_FRAMES = list(range(33200, 33410, 10))
QUERY_FRAMES = list(range(33240, 33320, 10))
UNRELATED_FRAME = 29000  # 4 km earlier on the line
STEP_S = 2  # keyframe spacing of the synthetic stamps


def single_frame(**kwargs) -> LoopClosureConfig:
    """The rules one at a time: single-frame matching, no verification, ORB (unless asked)."""
    kwargs.setdefault("sequence", SequenceConfig(length=1))
    kwargs.setdefault("verification", "off")
    kwargs.setdefault("geometry", GeometryConfig())
    return LoopClosureConfig(**kwargs)


@pytest.fixture(scope="module")
def nordland(shared):
    root = shared / "data/nordland64"
    encoder = RawPixelEncoder()
    summer = encoder.encode([read_rgb(root / f"summer/images-{f:05d}.png") for f in MAP_FRAMES])
    winter = encoder.encode([read_rgb(root / f"winter/images-{f:05d}.png") for f in QUERY_FRAMES])
    unrelated = encoder.encode([read_rgb(root / f"winter/images-{UNRELATED_FRAME:05d}.png")])[0]
    return encoder, summer, winter, unrelated


def _map(encoder, summer) -> MapDatabase:
    db = MapDatabase(ModelIdentity(encoder.name, encoder.dim))
    db.add_batch(summer, [i * STEP_S * NS_PER_S for i in range(len(summer))], ["camera"] * len(summer))
    return db


def test_candidates_are_the_top_k_above_threshold_best_first(nordland):
    encoder, summer, winter, _ = nordland
    db = _map(encoder, summer)
    threshold = 0.2
    detector = LoopDetector(db, single_frame(top_k=4, score_threshold=threshold))
    for q, frame in zip(winter, QUERY_FRAMES):
        det = detector.detect(q, stamp_ns=10**12, exclude_recent=False)
        brute = summer @ q
        expected = [int(i) for i in np.argsort(-brute)[:4] if brute[i] >= threshold]
        assert [c.map_id for c in det.candidates] == expected
        assert [c.score for c in det.candidates] == pytest.approx([float(brute[i]) for i in expected], abs=1e-5)
        # and the right place (+-1 frame) is the best candidate
        assert abs(MAP_FRAMES[det.candidates[0].map_id] - frame) <= 10
    # a threshold above every score leaves nothing, and nothing is consistent then
    strict = LoopDetector(db, single_frame(score_threshold=0.99))
    det = strict.detect(winter[0], stamp_ns=10**12, exclude_recent=False)
    assert det.candidates == [] and det.streak == 0 and not det.loop_closed


def test_mapping_mode_ignores_keyframes_newer_than_the_exclusion_window(nordland):
    encoder, summer, _, _ = nordland
    db = _map(encoder, summer)
    query_index = 15  # revisiting keyframe 15's own image right after it was added
    stamp = query_index * STEP_S * NS_PER_S + NS_PER_S // 2
    config = single_frame(top_k=3, score_threshold=-1.0, exclude_recent_s=10.0)
    detector = LoopDetector(db, config)

    # without exclusion the robot matches itself (score 1)
    itself = detector.detect(summer[query_index], stamp, exclude_recent=False).candidates[0]
    assert itself.map_id == query_index and itself.score == pytest.approx(1.0, abs=1e-5)

    # keyframes stamped after stamp - 10 s (ids 11..20) are excluded, older ones stay
    det = detector.detect(summer[query_index], stamp, exclude_recent=True)
    cutoff_id = (stamp - 10 * NS_PER_S) // (STEP_S * NS_PER_S)
    assert len(det.candidates) == 3 and all(c.map_id <= cutoff_id for c in det.candidates)
    brute = summer[: cutoff_id + 1] @ summer[query_index]
    assert [c.map_id for c in det.candidates] == list(np.argsort(-brute)[:3])

    # at the very start of the map everything is recent: no candidates at all
    assert detector.detect(summer[1], 2 * STEP_S * NS_PER_S, exclude_recent=True).candidates == []


def test_consistency_needs_k_consecutive_agreeing_detections(nordland):
    encoder, summer, winter, unrelated = nordland
    db = _map(encoder, summer)
    detector = LoopDetector(db, single_frame(score_threshold=0.2, consistency_k=3, consistency_window=2))
    now = 10**12

    fired = [detector.detect(q, now, exclude_recent=False) for q in winter[:4]]
    assert [d.streak for d in fired] == [1, 2, 3, 4]
    assert [d.loop_closed for d in fired] == [False, False, True, True]

    # an unrelated place: its best candidate is far from the last one -> streak restarts at 1
    off = detector.detect(unrelated, now, exclude_recent=False)
    assert off.candidates and abs(off.candidates[0].map_id - fired[-1].candidates[0].map_id) > 2
    assert off.streak == 1 and not off.loop_closed
    again = [detector.detect(q, now, exclude_recent=False) for q in winter[4:7]]
    assert [d.streak for d in again] == [1, 2, 3] and again[-1].loop_closed
    # a query with nothing above the threshold (the negated descriptor scores < 0) breaks the streak
    gap = detector.detect(-winter[7], now, exclude_recent=False)
    assert gap.candidates == [] and gap.streak == 0
    assert detector.detect(winter[7], now, exclude_recent=False).streak == 1

    # a window of 0 demands the very same keyframe: the moving train never agrees with itself
    exact = LoopDetector(db, single_frame(score_threshold=0.2, consistency_k=2, consistency_window=0))
    ids = [exact.detect(q, now, exclude_recent=False).candidates[0].map_id for q in winter[:4]]
    assert len(set(ids)) == 4  # distinct consecutive matches ...
    exact.reset()
    assert not any(exact.detect(q, now, exclude_recent=False).loop_closed for q in winter[:4])  # ... never agree


def test_required_verification_keeps_only_geometrically_consistent_candidates(shared):
    folder = shared / "data/camvid_sample/images"
    names = ["Seq05VD_f04980", "0001TP_008550", "0001TP_010350", "Seq05VD_f00300"]
    images = [read_rgb(folder / f"{n}.png") for n in names]
    encoder = RawPixelEncoder()
    db = MapDatabase(ModelIdentity(encoder.name, encoder.dim))
    for i, img in enumerate(images):
        db.add(encoder.encode([img])[0], i * NS_PER_S, "camera", features=extract_features(img, 1000))
    h, w = images[2].shape[:2]
    query = cv2.resize(images[2][30 : h - 30, 40 : w - 40], (w, h))  # keyframe 2, zoomed in
    desc, feats = encoder.encode([query])[0], extract_features(query, 1000)

    config = dict(top_k=4, score_threshold=-1.0, geometry=GeometryConfig(min_inliers=30))
    annotated = LoopDetector(db, single_frame(verification="annotate", **config)).detect(desc, 0, False, feats)
    assert len(annotated.candidates) == 4
    assert annotated.candidates[0].map_id == 2 and annotated.candidates[0].verification.verified
    assert all(c.verification is not None and not c.verification.verified for c in annotated.candidates[1:])

    required = LoopDetector(db, single_frame(verification="require", **config)).detect(desc, 0, False, feats)
    assert [c.map_id for c in required.candidates] == [2]
    assert required.candidates[0].verification.inliers >= 100

    # off: no verification at all, pure descriptor ranking
    plain = LoopDetector(db, single_frame(verification="off", **config)).detect(desc, 0, False, feats)
    assert all(c.verification is None for c in plain.candidates)
    assert [c.score for c in plain.candidates] == sorted((c.score for c in plain.candidates), reverse=True)


def test_threaded_verification_gives_the_sequential_results(shared):
    # Gardens Point: day_right keyframes around the query's place and away from it, the query
    # from the other side of the path (day_left) - a mix of verified and unverified candidates
    folder = shared / "data/gardenspoint"
    images = [read_rgb(folder / f"day_right/Image{n:03d}.jpg") for n in (12, 13, 14, 15, 16, 60, 120)]
    encoder = RawPixelEncoder()
    db = MapDatabase(ModelIdentity(encoder.name, encoder.dim))
    for i, img in enumerate(images):
        db.add(encoder.encode([img])[0], i * NS_PER_S, "camera", features=extract_features(img, 1000))
    query = read_rgb(folder / "day_left/Image014.jpg")
    desc, feats = encoder.encode([query])[0], extract_features(query, 1000)

    results = {}
    for threads in (1, 3):
        config = single_frame(top_k=len(images), score_threshold=-1.0, verification="annotate",
                                   verification_threads=threads)
        detection = LoopDetector(db, config).detect(desc, 0, False, feats)
        results[threads] = [(c.map_id, c.verification.inliers, c.verification.verified,
                             None if c.verification.rotation is None else c.verification.rotation.tobytes())
                            for c in detection.candidates]
    assert len(results[1]) == len(images)
    assert 0 < sum(verified for _, _, verified, _ in results[1]) < len(images)  # both kinds present
    assert results[3] == results[1]


@pytest.mark.parametrize(
    "values, key",
    [({"top_k": 0}, "top_k"), ({"score_threshold": 1.5}, "score_threshold"),
     ({"exclude_recent_s": -1}, "exclude_recent_s"), ({"consistency_k": 0}, "consistency_k"),
     ({"consistency_window": -2}, "consistency_window"), ({"verification": "maybe"}, "verification"),
     ({"verification_threads": 0}, "verification_threads")],
)
def test_invalid_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(LoopClosureConfig, values)


def test_keyframe_selector_needs_both_time_and_distance_when_poses_are_known():
    selector = KeyframeSelector(min_interval_s=1.0, min_distance_m=5.0)
    assert selector.accepts(0, np.zeros(3))  # the first frame always
    selector.commit(0, np.zeros(3))
    assert not selector.accepts(NS_PER_S // 2, np.array([10.0, 0, 0]))  # far, but too soon
    assert not selector.accepts(2 * NS_PER_S, np.array([3.0, 4.0 - 1e-6, 0]))  # late, but 5 m minus a hair
    assert selector.accepts(2 * NS_PER_S, np.array([3.0, 4.0, 0]))  # exactly 5 m
    assert selector.accepts(2 * NS_PER_S, None)  # no odometry for this frame: time rule only
    selector.reset()
    assert selector.last_stamp_ns is None and selector.accepts(0, None)


def test_pose_buffer_returns_the_nearest_pose_within_the_offset():
    buffer = PoseBuffer(max_offset_s=0.1, capacity=3)
    assert buffer.pose_at(0) is None
    for i in range(5):  # 0.0 .. 0.4 s; capacity 3 keeps 0.2, 0.3, 0.4
        buffer.add(i * NS_PER_S // 10, np.array([i, 0, 0, 0, 0, 0, 1.0]))
    assert buffer.pose_at(NS_PER_S * 31 // 100)[0] == 3  # 0.31 s -> the 0.3 s pose
    assert buffer.pose_at(NS_PER_S * 45 // 100)[0] == 4  # 0.05 s after the last one
    assert buffer.pose_at(NS_PER_S * 55 // 100) is None  # 0.15 s away from any pose
    assert buffer.pose_at(0) is None  # 0.0 s fell out of the buffer, 0.2 s is too far
    whole_bag = PoseBuffer(max_offset_s=0.1, capacity=None)  # the offline tools keep every pose
    for i in (4, 0, 2):  # bags may hold odometry out of stamp order
        whole_bag.add(i * NS_PER_S // 10, np.array([i, 0, 0, 0, 0, 0, 1.0]))
    assert len(whole_bag) == 3 and whole_bag.pose_at(NS_PER_S * 9 // 100)[0] == 0  # 0.09 s: nearer 0.0 than 0.2
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="finite number >= 0"):
            PoseBuffer(max_offset_s=bad)


def test_core_defaults_are_the_nodes_shipped_defaults():
    """Missions and the benchmark score LoopClosureConfig(); the node runs config/structvpr.yaml's values."""
    from structvpr_ros.node_config import config_from_parameters, parameter_defaults

    node = config_from_parameters({k: v for k, (v, _) in parameter_defaults().items()})
    assert node.loop_closure_config() == LoopClosureConfig()
