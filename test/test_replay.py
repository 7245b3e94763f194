"""replay end to end: real bag, real map, the real node over real DDS, numbers checked offline."""

import json
import random

import numpy as np
import pytest

from bag_helpers import write_image_bag
from structvpr_core.cli import main
from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.data.images import read_rgb
from structvpr_core.retrieval.map_database import MapDatabase
from structvpr_core.retrieval.sequence import SequenceConfig, ranked_by_sequence

RANGE = "29000:29290"  # 30 test-split places
# The mechanisms under test here (replay, scoring, matching answers to images) with the plainest rules:
# single frames, no verification (raw-pixel maps carry no local features)
PLAIN = {"verification": "off", "sequence_length": 1, "sequence_score_threshold": 3.0}


def params_file(path, **values):
    lines = "".join(f"    {k}: {v!r}\n".replace("'", '"') for k, v in {**PLAIN, **values}.items())
    path.write_text(f"structvpr_node:\n  ros__parameters:\n{lines}")
    return path
FRAMES = range(29000, 29300, 10)


@pytest.fixture(autouse=True)
def ros_env(monkeypatch):
    # own DDS domain per test: parallel runs on this shared machine must not hear each other
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="module")
def data(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    nordland = shared / "data/nordland64"
    assert main(["make-bag", "--images", str(nordland / "winter"), "--nordland-poses", "--frame-range", RANGE,
                 "--out", str(tmp / "winter.bag")]) == 0
    assert main(["build-map", "--model", "raw-pixel", "--images", str(nordland / "summer"), "--nordland-poses",
                 "--frame-range", RANGE, "--out", str(tmp / "map")]) == 0
    return tmp, nordland


def _winter_descriptors(nordland):
    return RawPixelEncoder().encode([read_rgb(nordland / f"winter/images-{f:05d}.png") for f in FRAMES])


def test_replay_in_process_matches_offline_retrieval(data, tmp_path):
    tmp, nordland = data
    report_path = tmp_path / "report.json"
    assert main(["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--rate-scale", "0", "--gt-radius", "10", "0", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert (tmp_path / "report_pr.png").stat().st_size > 5000
    assert report["frames"] == {"in_bag": 30, "sent": 30, "answered": 30, "unanswered": 0, "with_candidates": 30,
                                "header_stamp_0": 0}
    assert report["answers_matched"] == "by header stamp"
    assert report["node_diagnostics"]["frames_processed"] == 30 and report["node_diagnostics"]["frames_dropped"] == 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["max"] < 5000

    # Every published candidate list equals the map's own answer for the winter image
    db = MapDatabase.load(tmp / "map")
    queries = _winter_descriptors(nordland)
    for q, entry in zip(queries, report["queries"]):
        expected = db.query(q, 5)
        assert [i for i, _ in entry["candidates"]] == [i for i, _ in expected]
        assert np.allclose([s for _, s in entry["candidates"]], [s for _, s in expected], atol=1e-5)

    # R@1 by hand: map id i is frame FRAMES[i]; soft = within one file (10 frame numbers)
    top1 = np.array([e["candidates"][0][0] for e in report["queries"]])
    soft, hard = report["ground_truth"]["poses, radius 10"], report["ground_truth"]["poses, radius 0"]
    assert hard["recall_at_n"]["1"] == pytest.approx(np.mean(top1 == np.arange(30)))
    assert soft["recall_at_n"]["1"] == pytest.approx(np.mean(np.abs(top1 - np.arange(30)) <= 1))
    assert soft["recall_at_n"]["1"] >= hard["recall_at_n"]["1"] > 0  # raw pixels beat chance (1/30) here
    for r in (soft, hard):
        assert r["queries_with_revisit"] == 30 and r["queries_new_place"] == 0
        assert 0 < r["pr_auc"] <= 1 and 0 <= r["recall_at_100_precision"] <= r["recall_at_n"]["1"]
        assert r["recall_at_n"]["1"] <= r["recall_at_n"]["5"]


def test_replay_with_sequences_equals_offline_sequence_matching(data, tmp_path):
    """The live node (localization, sequences of 5) publishes exactly the offline ranking."""
    tmp, nordland = data
    report_path = tmp_path / "report.json"
    assert main(["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--rate-scale", "0", "--gt-radius", "10", "--sequence-length", "5", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["frames"]["answered"] == 30 and report["node_overrides"]["sequence_length"] == 5

    db = MapDatabase.load(tmp / "map")
    config = SequenceConfig(length=5, normalization="local_contrast")  # the CLI's defaults for raw-pixel
    scores, ids = ranked_by_sequence(_winter_descriptors(nordland), db.index.flat_vectors(), config, 5)
    for entry, expected_ids, expected_scores in zip(report["queries"], ids, scores):
        assert [i for i, _ in entry["candidates"]] == expected_ids.tolist()
        assert np.allclose([s for _, s in entry["candidates"]], expected_scores, rtol=1e-6)
    assert report["operating_point"]["sequence_score_threshold"] == 3.0  # the params file's z-score threshold
    # published at the file's threshold = the first candidate whose sequence score passes 3.0
    for entry in report["queries"]:
        passing = [i for i, score in entry["candidates"] if score >= 3.0]
        assert entry["published"] == (passing[0] if passing else None)


def test_gt_file_gives_the_same_numbers_as_exact_poses(data, tmp_path):
    tmp, _ = data
    stamps = MapDatabase.load(tmp / "map").stamps_ns  # map and bag share the default synthetic stamps
    gt = tmp_path / "gt.csv"
    gt.write_text("query_stamp_ns,map_id\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))
    for name, extra in (("file", ["--gt", str(gt)]), ("poses", ["--gt-radius", "0"])):
        assert main(["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                     "--rate-scale", "0", *extra, "--out", str(tmp_path / f"{name}.json")]) == 0
    by_file = json.loads((tmp_path / "file.json").read_text())["ground_truth"]["file gt.csv"]
    by_pose = json.loads((tmp_path / "poses.json").read_text())["ground_truth"]["poses, radius 0"]
    for key in ("recall_at_n", "pr_auc", "recall_at_100_precision"):
        assert by_file[key] == by_pose[key]


def test_unthrottled_separate_process_counts_drops_consistently(data, tmp_path):
    tmp, _ = data
    report_path = tmp_path / "r.json"
    # no pacing, never wait: the node sees bursts and keeps only the newest frame
    assert main(["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--separate-process", "--rate-scale", "0", "--max-in-flight", "0", "--answer-timeout", "2",
                 "--gt-radius", "10", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    frames, diag = report["frames"], report["node_diagnostics"]
    assert report["node"] == "separate process"
    assert frames["sent"] == 30 and frames["answered"] + frames["unanswered"] == 30
    assert frames["answered"] == diag["frames_processed"] >= 1
    # every frame the node reports dropped went unanswered (DDS may lose a few more on its own)
    assert frames["unanswered"] >= diag["frames_dropped"]
    assert "ready: mode localization" in (tmp_path / "r_node.log").read_text()


def test_model_mismatch_and_missing_gt_fail_with_one_line(data, tmp_path, capsys):
    tmp, nordland = data
    args = ["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--out", str(tmp_path / "r.json")]
    assert main([*args, "--model", "random-mobilenetv2", "--resize", "64x32", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "refused to start" in err and "raw-pixel-64x32-p8" in err and "random-mobilenetv2-seed0" in err
    # a bag without odometry cannot give pose ground truth
    assert main(["make-bag", "--images", str(nordland / "winter"), "--frame-range", "29000:29020",
                 "--out", str(tmp_path / "no_odom.bag")]) == 0
    assert main(["replay", "--bag", str(tmp_path / "no_odom.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 images have no pose" in err and "--gt none" in err
    assert not (tmp_path / "r.json").exists()


def test_without_ground_truth_replays_and_reports_candidates_latency_and_drops(data, tmp_path, capsys):
    tmp, nordland = data
    assert main(["make-bag", "--images", str(nordland / "winter"), "--frame-range", "29000:29040",
                 "--out", str(tmp_path / "no_odom.bag")]) == 0
    report_path = tmp_path / "r.json"
    assert main(["replay", "--bag", str(tmp_path / "no_odom.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--rate-scale", "0", "--gt", "none", "--out", str(report_path)]) == 0
    assert "not scored (--gt none); candidates published for 5 of 5 images" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["ground_truth"] == {} and not (tmp_path / "r_pr.png").exists()
    assert report["frames"]["answered"] == 5 and report["frames"]["unanswered"] == 0
    assert report["latency_ms"]["p50"] > 0 and report["node_diagnostics"]["frames_processed"] == 5
    db = MapDatabase.load(tmp / "map")
    for q, entry in zip(_winter_descriptors(nordland)[:5], report["queries"]):
        assert [i for i, _ in entry["candidates"]] == [i for i, _ in db.query(q, 5)]


@pytest.mark.parametrize("stamps", ["zero", "shared"])
def test_images_without_own_stamps_are_matched_by_the_nodes_image_number(data, tmp_path, stamps):
    """Header stamps 0 (drivers that leave them empty) or shared by pairs: answers still go to their image."""
    tmp, nordland = data
    frames = [read_rgb(nordland / f"winter/images-{f:05d}.png") for f in FRAMES[:6]]
    record = [1_700_000_000_000_000_000 + k * 100_000_000 for k in range(6)]
    header = [0] * 6 if stamps == "zero" else [record[k - k % 2] for k in range(6)]
    write_image_bag(tmp_path / "q.bag", frames, header, record, topic="/cam/image")
    report_path = tmp_path / "r.json"
    assert main(["replay", "--bag", str(tmp_path / "q.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--rate-scale", "0", "--gt", "none", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["answers_matched"].startswith("by query_id")
    assert report["frames"]["answered"] == 6 and report["frames"]["header_stamp_0"] == (6 if stamps == "zero" else 0)
    db = MapDatabase.load(tmp / "map")
    for q, entry in zip(_winter_descriptors(nordland)[:6], report["queries"]):
        assert [i for i, _ in entry["candidates"]] == [i for i, _ in db.query(q, 5)]
    if stamps == "zero":  # stamps are the record times, as build-map stores them
        assert [e["stamp_ns"] for e in report["queries"]] == record


def test_real_ros1_bags_replay(shared, tmp_path):
    """A ROS 1 bag as recorded: compressed JPEG on a topic without leading slash, stamps 10 min before the
    record time (fiducials); and an rgb8 image with header stamp 0. ros_numpy's ROS 1 bag has one, but of
    random pixels: featureless (issue 20, S1), so left out of a map; a real frame stands in for it."""
    bag = shared / "data/ros1_bags/rosnumpy_test.bag"
    assert main(["build-map", "--model", "raw-pixel", "--bag", str(bag), "--topic", "/image",
                 "--out", str(tmp_path / "noise_map")]) == 2
    unstamped = tmp_path / "unstamped.bag"
    write_image_bag(unstamped, [read_rgb(shared / "data/nordland64/summer/images-29000.png")], [0],
                    [1494949708_531555891], topic="/image")
    for bag, topic in ((shared / "data/ros1_bags/fiducials_board_611.bag", "raspicam_node/camera/image/compressed"),
                       (unstamped, "/image")):
        name = bag.name
        map_dir = tmp_path / f"{name}_map"
        assert main(["build-map", "--model", "raw-pixel", "--bag", str(bag), "--topic", topic,
                     "--out", str(map_dir)]) == 0
        report_path = tmp_path / f"{name}.json"
        assert main(["replay", "--bag", str(bag), "--topic", topic, "--map", str(map_dir), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                     "--rate-scale", "0", "--gt", "none", "--out", str(report_path)]) == 0
        report = json.loads(report_path.read_text())
        assert report["image_topic"] == topic and report["frames"]["answered"] == 1
        [[map_id, similarity]] = report["queries"][0]["candidates"]  # the map's only keyframe: the image itself
        assert map_id == 0 and similarity == pytest.approx(1.0, abs=1e-5)


def test_summary_warns_when_the_node_heard_more_images_than_were_sent(tmp_path):
    from structvpr_ros.replay import summary

    report = {"bag": "b", "map": "m", "map_keyframes": 3, "model": "raw-pixel", "node": "in-process",
              "frames": {"in_bag": 3, "sent": 3, "answered": 3, "unanswered": 0, "with_candidates": 3},
              "latency_ms": None,
              "answered_rate_hz": 1.0, "playback_wall_s": 3.0, "ground_truth": {}, "map_keyframes_at_start": 3,
              "node_diagnostics": {"frames_received": 3}}
    assert "WARNING" not in summary(report, tmp_path / "r.json", None)
    report["node_diagnostics"]["frames_received"] = 5
    assert "received 5 images but replay sent 3" in summary(report, tmp_path / "r.json", None)


def _two_pass_mission(nordland):
    """Summer then winter over 30 places: a run whose second half revisits its first."""
    from structvpr_core.evaluation.missions import Mission, _passes

    return Mission("test two passes", "val", "cross", 10,
                   _passes(("nordland64/summer", "nordland64/winter"), (29000, 29290)))


def test_mapping_replay_publishes_what_the_offline_detector_ranks_and_scores_every_query(data, tmp_path):
    """Mapping mode: one bag that revisits places, an empty map; the node's answers equal the core
    detector played over the same frames (missions.play_mission), and the scores count the new places."""
    from structvpr_core.evaluation.missions import play_mission, write_poses_csv
    from structvpr_core.loop_closure.candidates import LoopClosureConfig

    tmp, nordland = data
    mission = _two_pass_mission(nordland)
    frames = mission.frames(nordland.parent)
    write_poses_csv(frames, nordland, tmp_path / "poses.csv")
    assert main(["make-bag", "--images", str(nordland), "--poses", str(tmp_path / "poses.csv"),
                 "--out", str(tmp_path / "run.bag")]) == 0
    report_path = tmp_path / "mapping.json"
    params = tmp_path / "params.yaml"  # raw-pixel cosines are small: an operating point inside their range
    params_file(params, score_threshold=0.3, exclude_recent_s=10.0)
    assert main(["replay", "--mode", "mapping", "--bag", str(tmp_path / "run.bag"), "--model", "raw-pixel",
                 "--params", str(params), "--rate-scale", "0", "--gt-radius", "10", "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["mode"] == "mapping" and report["frames"]["answered"] == 60
    assert [q["map_id"] for q in report["queries"]] == list(range(60))

    descriptors = RawPixelEncoder().encode([read_rgb(f.path) for f in frames])
    offline = play_mission(frames, descriptors, LoopClosureConfig(
        score_threshold=-1.0, exclude_recent_s=10.0, verification="off", sequence=SequenceConfig(length=1)))
    for entry, expected in zip(report["queries"], offline.outcomes):
        assert [i for i, _ in entry["candidates"]] == [i for i, _ in expected.ranked]
    truth = report["ground_truth"]["poses, radius 10"]
    assert truth["queries"] == 60 and truth["queries_with_revisit"] == 30 and truth["queries_new_place"] == 30
    expected = offline.score(10, 10.0)
    for key in ("recall_at_n", "pr_auc", "recall_at_100_precision"):
        assert truth[key] == expected[key]
    # at the params file's cosine threshold: what is published, scored with the new places
    published = truth["published"]
    accepted = [q for q in report["queries"] if q["published"] is not None]
    assert published["loop_closures"] == len(accepted) > 0
    assert all(q["candidates"][0][1] >= 0.3 for q in accepted)
    assert published["true_positives"] + published["false_positives"] == len(accepted)
    assert published["false_positives_on_new_places"] == sum(q["index"] < 30 for q in accepted) > 0
    assert truth["worst_false_positives"][0]["score"] >= truth["worst_false_positives"][-1]["score"]


def test_replay_takes_sequence_settings_from_the_params_file_unless_given(data, tmp_path):
    tmp, _ = data
    params = tmp_path / "params.yaml"
    params_file(params, sequence_length=4, sequence_velocity_steps=3)
    base = ["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
            "--rate-scale", "0", "--gt", "none", "--params", str(params)]
    assert main([*base, "--out", str(tmp_path / "a.json")]) == 0
    overrides = json.loads((tmp_path / "a.json").read_text())["node_overrides"]
    assert overrides["sequence_length"] == 4 and overrides["sequence_velocity_steps"] == 3
    assert main([*base, "--sequence-length", "2", "--out", str(tmp_path / "b.json")]) == 0
    overrides = json.loads((tmp_path / "b.json").read_text())["node_overrides"]
    assert overrides["sequence_length"] == 2 and overrides["sequence_velocity_steps"] == 3


def test_replay_refuses_an_unusable_report_path_before_playing(data, tmp_path, capsys):
    tmp, _ = data
    assert main(["replay", "--bag", str(tmp / "winter.bag"), "--map", str(tmp / "map"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["replay", "--mode", "localization", "--bag", str(tmp / "winter.bag"), "--model", "raw-pixel",
                 "--params", str(params_file(tmp_path / "plain.yaml")),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "--map is required in localization mode" in capsys.readouterr().err
