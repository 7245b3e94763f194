"""Missions (SLAM-style runs from the shared data) and their scoring, on real images."""

import numpy as np
import pytest

from structvpr_core.evaluation.ground_truth import loop_matrix, pairs_csv, revisits, within_radius
from structvpr_core.evaluation.loop_scoring import QueryOutcome, score_run
from structvpr_core.evaluation.mission_benchmark import run_missions
from structvpr_core.evaluation.missions import MISSIONS, PASS_GAP_S, Mission, _passes, missions
from structvpr_core.loop_closure.candidates import LoopClosureConfig
from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.data.images import read_rgb


def test_every_mission_loads_and_val_and_test_share_no_frame(shared):
    data = shared / "data"
    frames = {m.name: m.frames(data) for m in MISSIONS}
    assert {m.split for m in MISSIONS} == {"val", "test"}
    for name, fs in frames.items():
        assert len(fs) >= 60 and all(b.stamp_ns > a.stamp_ns for a, b in zip(fs, fs[1:])), name
    val = {f.path for m in missions("val") for f in frames[m.name]}
    test = {f.path for m in missions("test") for f in frames[m.name]}
    assert not val & test
    with pytest.raises(ValueError, match="val or test"):
        missions("train")


def test_revisits_are_the_second_pass_outside_the_exclusion_window(shared):
    mission = next(m for m in MISSIONS if m.name == "gardenspoint day_right->night_right val")
    frames = mission.frames(shared / "data")
    truth = revisits([f.stamp_ns for f in frames], [f.position for f in frames], mission.revisit_radius, 30.0)
    first, second = truth[:100], truth[100:]
    assert all(t.size == 0 for t in first)  # a pass over new places: frames 5 apart are not the same place
    # night frame i revisits day frames i-2..i+2 (+-2 frames), ids = the day frames' positions in the run
    assert [t.tolist() for t in second[2:4]] == [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert frames[100].stamp_ns - frames[99].stamp_ns == round((PASS_GAP_S + 1) * 1e9)
    # a revisit inside the exclusion window is not one: the detector may not return it
    assert all(t.size == 0 for t in revisits([0, 10**9], [[0.0], [0.0]], 1.0, 30.0))


def test_score_run_counts_a_new_place_that_publishes_as_a_false_positive():
    positives = [np.array([], np.int64), np.array([0]), np.array([1])]
    outcomes = [QueryOutcome([(5, 0.9)], published=5),  # new place, published: wrong
                QueryOutcome([(0, 0.8)], published=0),  # right
                QueryOutcome([(3, 0.7)], published=None)]  # a wrong top candidate, not published
    result = score_run(positives, outcomes)
    assert result["published"] == {"loop_closures": 2, "true_positives": 1, "false_positives": 1,
                                   "false_positives_on_new_places": 1, "precision": 0.5, "recall": 0.5}
    # the curve over the top-1 score: the best-scored query is wrong, so no recall at precision 1
    assert result["recall_at_100_precision"] == 0.0 and result["threshold_at_100_precision"] is None
    assert result["worst_false_positives"][0]["query_has_revisit"] is False


def test_ground_truth_files_name_the_bad_line(tmp_path):
    stamps = [10, 20, 30]
    good = tmp_path / "pairs.csv"
    good.write_text("stamp_a_ns,stamp_b_ns\n10,30\n")
    assert [p.tolist() for p in pairs_csv(good, stamps)] == [[2], [], [0]]
    bad = tmp_path / "bad.csv"
    bad.write_text("stamp_a_ns,stamp_b_ns\n10,31\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: no image of the run has stamp 31"):
        pairs_csv(bad, stamps)
    matrix = tmp_path / "loops.txt"
    matrix.write_text("0 0 1\n0 0 0\n0 0 0\n")
    assert [p.tolist() for p in loop_matrix(matrix, 3)] == [[2], [], [0]]
    with pytest.raises(ValueError, match="loop matrix is 3x3, the run has 4 images"):
        loop_matrix(matrix, 4)
    assert [p.tolist() for p in within_radius([[0.0], [np.nan]], [[1.0], [5.0]], 2.0)] == [[0], []]


def test_shipped_defaults_publish_only_right_loop_closures_on_a_real_day_night_run(shared, tmp_path):
    """Mapping mode through the detector at the node's defaults (XFeat verification, sequences of 3):
    40 Gardens Point val places by day, then at night; raw pixels retrieve, verification decides."""
    data = shared / "data"
    mission = Mission("day then night, 40 places", "val", "cross", 2,
                      _passes(("gardenspoint/day_right", "gardenspoint/night_right"), (0, 39)))
    encoder = RawPixelEncoder()

    def encode(spec, paths):
        assert spec == "raw-pixel"
        return encoder.encode([read_rgb(p) for p in paths])

    [row] = run_missions(["raw-pixel"], [mission], data, encode, cache_dir=tmp_path, log=lambda _: None)
    published = row["published"]
    assert row["queries"] == 80 and row["queries_with_revisit"] == 40
    assert published["false_positives_on_new_places"] == 0 and published["true_positives"] >= 10
    # by the data set's +-2 frames, measured: 18 of 19 right; the wrong one (night 35 -> day 31, 48 inliers)
    # is the neighbouring view 4 frames off: every published loop closure is within 5 frames
    assert published["precision"] >= 0.9
    assert all(w["offset"] <= 5 for w in row["worst_false_positives"] if w["published"])
    assert LoopClosureConfig().verification == "require"  # what made them right
    # the features are cached: a second run reads them and gives the same answers
    assert len(list(tmp_path.glob("features_*.npz"))) == 1
    [again] = run_missions(["raw-pixel"], [mission], data, encode, cache_dir=tmp_path, log=lambda _: None)
    assert again["published"] == published and again["pr_curve"] == row["pr_curve"]
