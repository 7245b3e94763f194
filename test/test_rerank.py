"""Re-ranking by verified inliers and the calibrated verification score, on real XFeat inliers."""

import numpy as np
import pytest

from structvpr_core.config import ConfigError
from structvpr_core.data.images import read_rgb
from structvpr_core.loop_closure.geometry import GeometryConfig, verify
from structvpr_core.loop_closure.local_features import FeatureExtractor
from structvpr_core.loop_closure.rerank import (
    InlierCalibration,
    fit_inlier_calibration,
    rerank_order,
    verification_score,
)
from structvpr_core.runtime.preprocess import resize_rgb


def test_rerank_puts_the_verified_true_place_first_on_real_night_day_candidates(shared):
    # night_right 55 against day_right candidates in a global-score order that ranks wrong
    # places first (as a global descriptor does at night): 130, 10, 55, 90
    def frame(name):
        return resize_rgb(read_rgb(shared / f"data/gardenspoint/{name}.jpg"), (640, 480))

    extract = FeatureExtractor("xfeat", 1024)
    config = GeometryConfig(features="xfeat", max_features=1024, min_inliers=15)
    query = extract(frame("night_right/Image055"))
    candidates = [130, 10, 55, 90]
    inliers = [verify(query, extract(frame(f"day_right/Image{n:03d}")), config).inliers for n in candidates]
    order = rerank_order([0.9, 0.8, 0.7, 0.6], inliers)
    assert candidates[order[0]] == 55, inliers


def test_rerank_ties_keep_the_global_order():
    assert list(rerank_order([0.5, 0.9, 0.7], [0, 0, 0])) == [1, 2, 0]
    assert list(rerank_order([0.5, 0.9, 0.7], [40, 3, 40])) == [2, 0, 1]
    with pytest.raises(ValueError, match="equal-length"):
        rerank_order([0.5, 0.9], [1])


def test_calibration_fit_recovers_a_known_logistic_and_scores_are_probabilities():
    rng = np.random.default_rng(0)
    inliers = rng.integers(0, 80, 20000)
    truth = InlierCalibration(midpoint=20.0, scale=4.0)
    labels = rng.random(len(inliers)) < verification_score(inliers, truth)
    fitted = fit_inlier_calibration(inliers, labels)
    assert fitted.midpoint == pytest.approx(20.0, abs=1.0) and fitted.scale == pytest.approx(4.0, rel=0.1)
    assert verification_score(20, fitted) == pytest.approx(0.5, abs=0.06)
    assert 0 < verification_score(0, fitted) < 0.01 and verification_score(200, fitted) > 0.999
    # separable data (every true pair above every wrong one) still gives a finite, sharp fit
    sharp = fit_inlier_calibration([0, 3, 5, 8, 40, 60, 90], [0, 0, 0, 0, 1, 1, 1])
    assert 8 < sharp.midpoint < 40
    with pytest.raises(ValueError, match="both classes"):
        fit_inlier_calibration([1, 2], [1, 1])
    with pytest.raises(ValueError, match="do not increase the odds"):
        fit_inlier_calibration([50, 60, 1, 2], [0, 0, 1, 1])
    with pytest.raises(ConfigError, match="scale > 0"):
        InlierCalibration(10.0, 0.0)
