"""Geometric verification on real CamVid street images (ORB + essential matrix / rotation RANSAC)."""

import cv2
import numpy as np
import pytest

from structvpr_core.config import ConfigError
from structvpr_core.loop_closure.geometry import (
    FeatureExtractor,
    GeometryConfig,
    LocalFeatures,
    default_intrinsics,
    extract_features,
    rotation_angle_deg,
    verify,
)
from structvpr_core.data.images import read_rgb

CONFIG = GeometryConfig()


@pytest.fixture(scope="module")
def camvid(shared):
    folder = shared / "data/camvid_sample/images"
    names = ["Seq05VD_f02100", "0001TP_008550", "Seq05VD_f04980", "0001TP_010350"]
    return {n: read_rgb(folder / f"{n}.png") for n in names}


def _rotate_view(rgb: np.ndarray, axis, angle_deg: float, K: np.ndarray):
    """The image a camera rotated by R (about its centre) would see: x' ~ K R^T K^-1 x.

    Returns (warped image, R) with R the query camera's orientation in the original
    camera's frame (the convention ``verify`` reports).
    """
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    R = cv2.Rodrigues(axis * np.radians(angle_deg))[0]
    H = K @ R.T @ np.linalg.inv(K)
    h, w = rgb.shape[:2]
    return cv2.warpPerspective(rgb, H, (w, h)), R


def test_features_are_plain_arrays_of_the_documented_layout(camvid):
    f = extract_features(camvid["Seq05VD_f02100"], 500)
    assert f.keypoints.dtype == np.float32 and f.keypoints.shape[1] == 2
    assert f.descriptors.dtype == np.uint8 and f.descriptors.shape == (len(f), 32)
    assert 400 <= len(f) <= 500 and f.image_size == (480, 360)
    # a textureless image has no keypoints and verifies against nothing
    blank = extract_features(np.full((360, 480, 3), 128, np.uint8), 500)
    assert len(blank) == 0
    v = verify(blank, f, CONFIG)
    assert (v.matches, v.inliers, v.verified) == (0, 0, False)


def test_cropped_rescaled_view_of_the_same_image_verifies_with_many_inliers(camvid):
    img = camvid["Seq05VD_f02100"]
    h, w = img.shape[:2]
    # crop away 10-15 % of each side and scale back up: like stepping forward (a zoom)
    zoomed = cv2.resize(img[40 : h - 40, 50 : w - 50], (w, h), interpolation=cv2.INTER_LINEAR)
    v = verify(extract_features(zoomed, 1000), extract_features(img, 1000), CONFIG)
    assert v.verified and v.inliers >= 200, v
    assert not v.pure_rotation
    # a zoom about the image centre is the epipolar geometry of a forward translation
    assert abs(v.translation[2]) > 0.9 and np.linalg.norm(v.translation) == pytest.approx(1.0)
    assert rotation_angle_deg(v.rotation) < 5.0


def test_unrelated_street_scenes_do_not_verify(camvid):
    feats = {n: extract_features(img, 1000) for n, img in camvid.items()}
    for a, b in [("Seq05VD_f02100", "0001TP_008550"), ("Seq05VD_f04980", "0001TP_010350"),
                 ("0001TP_008550", "Seq05VD_f04980")]:
        v = verify(feats[a], feats[b], CONFIG)
        assert not v.verified and v.inliers < CONFIG.min_inliers // 2, (a, b, v.matches, v.inliers)


@pytest.mark.parametrize("axis, angle", [((0, 1, 0), 5.0), ((1, 0, 0), 3.0), ((0.3, 1, 0.1), 6.0)])
def test_pure_rotation_with_known_intrinsics_recovers_the_rotation(camvid, axis, angle):
    img = camvid["Seq05VD_f02100"]
    K = default_intrinsics(img.shape[1], img.shape[0])
    rotated, R_true = _rotate_view(img, axis, angle, K.matrix())
    v = verify(extract_features(rotated, 1000), extract_features(img, 1000), CONFIG, K)
    assert v.verified and v.pure_rotation and v.inliers >= 300, v
    assert rotation_angle_deg(v.rotation) == pytest.approx(angle, abs=0.3)
    assert rotation_angle_deg(v.rotation.T @ R_true) < 0.3  # the axis is right too, not just the angle
    assert np.all(v.translation == 0)
    # first-order covariance: symmetric positive definite, sub-degree for ~500 good inliers
    cov = v.rotation_covariance
    assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.degrees(np.sqrt(np.diag(cov))).max() < 0.5


def test_rotation_covariance_grows_when_fewer_features_support_the_estimate(camvid):
    img = camvid["Seq05VD_f02100"]
    K = default_intrinsics(img.shape[1], img.shape[0])
    rotated, _ = _rotate_view(img, (0, 1, 0), 5.0, K.matrix())
    many = verify(extract_features(rotated, 1000), extract_features(img, 1000), CONFIG, K)
    few_config = GeometryConfig(max_features=60, min_inliers=10, min_keypoints=0)
    few = verify(extract_features(rotated, 60), extract_features(img, 60), few_config, K)
    assert few.inliers < many.inliers / 4
    assert np.trace(few.rotation_covariance) > 2 * np.trace(many.rotation_covariance)


def test_verification_is_deterministic(camvid):
    img = camvid["Seq05VD_f02100"]
    h, w = img.shape[:2]
    zoomed = cv2.resize(img[30 : h - 30, 40 : w - 40], (w, h))
    a, b = extract_features(zoomed, 800), extract_features(img, 800)
    first, second = verify(a, b, CONFIG), verify(a, b, CONFIG)
    assert first.inliers == second.inliers and np.array_equal(first.rotation, second.rotation)


# Gardens Point pairs at 640x480, verified by the per-hypothesis Python RANSAC loop this
# module had before its rotation RANSAC was batched and the essential-matrix RANSAC got
# its iteration cap (commit 3e3bd6b): (query, candidate, verified, inliers, rotation deg).
# Pinned for the plain-RANSAC estimator, whose answer is one fixed draw of OpenCV's sampler.
RANSAC = GeometryConfig(estimator="ransac")
REFERENCE_PAIRS = [
    ("day_left/Image050", "day_left/Image051", True, 99, 2.465094),
    ("day_left/Image110", "day_left/Image111", True, 203, 18.648225),
    ("day_left/Image170", "day_right/Image170", True, 139, 1.482342),
    ("day_left/Image190", "day_right/Image190", True, 50, 3.484695),
    ("day_left/Image090", "day_right/Image090", False, 0, None),  # too few matches
    ("day_left/Image130", "day_right/Image130", False, 17, None),  # too few inliers (capped RANSAC: fewer)
]


def _gardens_point_features(shared, name):
    bgr = cv2.resize(cv2.imread(str(shared / f"data/gardenspoint/{name}.jpg")), (640, 480))
    return extract_features(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), CONFIG.max_features)


@pytest.mark.parametrize("query, candidate, verified, inliers, angle", REFERENCE_PAIRS)
def test_batched_ransac_gives_the_previous_results_on_real_pairs(shared, query, candidate, verified, inliers, angle):
    v = verify(_gardens_point_features(shared, query), _gardens_point_features(shared, candidate), RANSAC)
    assert v.verified == verified and not v.pure_rotation
    if verified:
        assert v.inliers == inliers and rotation_angle_deg(v.rotation) == pytest.approx(angle, abs=1e-4)
    else:
        assert v.inliers <= inliers


def test_batched_rotation_ransac_keeps_the_rotation_model_on_a_real_panning_pair(shared):
    # the one pair of the reference set where the rotation-only model wins; its RANSAC now
    # draws its hypotheses in batches, so the winning sample (not the model) may differ:
    # before 145 inliers and 2.128 deg
    v = verify(_gardens_point_features(shared, "day_left/Image030"),
               _gardens_point_features(shared, "day_left/Image031"), RANSAC)
    assert v.verified and v.pure_rotation
    assert abs(v.inliers - 145) <= 0.05 * 145 and rotation_angle_deg(v.rotation) == pytest.approx(2.128, abs=0.25)


def test_usac_verifies_real_same_place_pairs_as_well_as_ransac_and_rejects_other_places(shared):
    # The default estimator (USAC) was chosen on benchmarks/verification_consistency.py (396
    # same-place pairs: 208-211 verified vs RANSAC's 201-209, 0 of 150 wrong places, 2.4x
    # faster); here a small real sample: day_left N vs day_right N +- 1 (same place, other
    # side of the path) and day_left N vs day_right N + 100 (another place).
    names = {f"{side}/Image{n:03d}" for n in range(20, 200, 30) for side, d in (("day_left", 0), ("day_right", 0))}
    names |= {f"day_right/Image{n + d:03d}" for n in range(20, 200, 30) for d in (-1, 1)}
    names |= {f"day_right/Image{(n + 100) % 200:03d}" for n in range(20, 200, 30)}
    features = {name: _gardens_point_features(shared, name) for name in names}
    same = [(f"day_left/Image{n:03d}", f"day_right/Image{n + d:03d}") for n in range(20, 200, 30) for d in (-1, 0, 1)]
    other = [(f"day_left/Image{n:03d}", f"day_right/Image{(n + 100) % 200:03d}") for n in range(20, 200, 30)]

    def verified(config, pairs):
        return sum(verify(features[q], features[c], config).verified for q, c in pairs)

    usac_same = verified(CONFIG, same)
    assert CONFIG.estimator == "usac"
    assert usac_same >= verified(RANSAC, same) - 1 and usac_same >= len(same) // 3
    assert verified(CONFIG, other) == 0


def test_bad_inputs_are_rejected_with_clear_messages():
    with pytest.raises(ConfigError, match="ratio_test"):
        GeometryConfig(ratio_test=1.5)
    with pytest.raises(ConfigError, match="min_inliers"):
        GeometryConfig(min_inliers=2)
    with pytest.raises(ConfigError, match="estimator must be one of"):
        GeometryConfig(estimator="lmeds")
    with pytest.raises(ValueError, match="descriptors must be uint8"):
        LocalFeatures(np.zeros((3, 2), np.float32), np.zeros((3, 32), np.float32), (10, 10))
    with pytest.raises(ValueError, match="3 keypoints but 2 descriptors"):
        LocalFeatures(np.zeros((3, 2), np.float32), np.zeros((2, 32), np.uint8), (10, 10))
    with pytest.raises(ValueError, match="expected RGB uint8"):
        extract_features(np.zeros((10, 10), np.uint8), 100)


def test_images_with_too_few_keypoints_are_never_verified(shared):
    """nordland64's real 64x32 frames: wrong pairs reach as many inliers as true ones, so they are not verified."""
    nordland = shared / "data/nordland64"
    summer, winter = (read_rgb(nordland / f"{s}/images-29000.png") for s in ("summer", "winter"))
    extractor = FeatureExtractor("xfeat", 1024, min_image_width=0)  # at native size (not enlarged)
    a, b = extractor(summer), extractor(winter)
    assert 0 < min(len(a), len(b)) < 100
    config = GeometryConfig(features="xfeat", min_inliers=5, min_image_pixels=0)  # the keypoint rule alone
    refused = verify(a, b, config)
    assert (refused.matches, refused.inliers, refused.verified) == (0, 0, False)
    # with the rule off the pair is matched and RANSAC runs: what the rule protects against
    assert verify(a, b, GeometryConfig(features="xfeat", min_inliers=5, min_keypoints=0, min_image_pixels=0)).matches > 0
