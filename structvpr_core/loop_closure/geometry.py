"""Geometric verification of a place-recognition match: local features + essential matrix RANSAC.

A global-descriptor match says "these images look alike"; this module checks that the
two views are consistent with one rigid camera motion and estimates that motion.

Pipeline: local features of the configured kind (``local_features.py``: ``orb`` keypoints
with ratio-test Hamming matching, or learned ``xfeat`` keypoints with mutual-nearest
cosine matching; storable as plain arrays, so a map database keeps them per keyframe)
-> points normalised with each image's intrinsics -> 5-point essential matrix in a robust
estimator (OpenCV USAC, MAGSAC++ or RANSAC; ``cv2.findEssentialMat``) -> ``cv2.recoverPose``
(cheirality) -> relative pose. Essential-matrix inliers (after cheirality) tell true from
wrong Gardens Point val pairs as well as fundamental-matrix MAGSAC++ inliers do (XFeat, ROC
AUC night -> day 0.931 vs 0.930, viewpoint 0.983 vs 0.978) and come with the pose; USAC
does as well as MAGSAC++ there (0.929 / 0.976) for less time, so ``usac`` stays the default
(benchmarks/local_features.py, benchmarks/README.md).

Candidates with fewer matches (or essential-matrix inliers) than
``min_inliers`` are rejected before any pose work: an unrelated candidate then costs
the matching only, not a RANSAC run to its iteration limit.

Model selection: with no baseline (camera only rotated, or scene far away compared
with the baseline) the essential matrix is degenerate: every translation fits, and
the cheirality test throws away most correct matches. So a 3-DoF rotation-only model
(``x_c ~ R x_q``, 2-point RANSAC) is fitted too and wins when it keeps at least 80 % of
the essential-matrix inliers (the ratio ORB-SLAM uses to pick a homography over a
fundamental matrix: S_H / (S_H + S_F) > 0.45). Then ``pure_rotation`` is True and the
translation is zero.

Conventions:
- ``rotation``/``translation`` give the query camera's pose in the candidate camera frame
  (optical frames: x right, y down, z forward): ``X_candidate = R @ X_query + t``.
  Monocular geometry has no scale, so ``t`` is a unit direction (or zero, see above).
- Intrinsics: pass the real ones (pixels). Without them ``default_intrinsics`` guesses a
  pinhole with the principal point at the image centre and focal length 1.2 x the
  larger image side (COLMAP's prior for cameras without calibration, ~45 deg horizontal
  field of view on a landscape image). With a wrong focal length the inlier test still
  works (the epipolar constraint tolerates it for small rotations) but the recovered
  rotation angle scales with the focal error, so set intrinsics for metric use.
- ``rotation_covariance`` (rad^2, 3x3, small rotations applied on the left, i.e. about the
  candidate frame's axes): first-order (Gauss-Newton) covariance of the estimate,
  ``sigma^2 (J^T J)^+`` with J the Jacobian of the inliers' residuals in pixels (Sampson
  epipolar errors for the essential model, transfer errors for the rotation model) with
  respect to the pose parameters (3 rotation + 2 translation-direction, or 3) and
  sigma^2 the inliers' residual variance (RSS / (N - parameters)); the rotation block
  is returned. It shrinks with more inliers and wider point spread and grows with pixel
  noise and near-degenerate geometry, which is what a pose-graph back end needs to
  weigh a loop edge. It assumes independent pixel errors, so it is a lower bound:
  correlated errors (ORB's pyramid quantisation, interpolation) make real errors several
  times larger, and a RANSAC solution that picked the wrong mode (few inliers, tiny
  baseline) is not covered at all. The translation has no scale, so monocular
  verification gives no metric translation covariance.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import cv2
import numpy as np

from structvpr_core.config import ConfigError
from structvpr_core.runtime.options import RUNTIMES
# LocalFeatures, extract_features (ORB) and ORB_DESCRIPTOR_BYTES are imported from here by
# callers that predate the pluggable kinds
from structvpr_core.loop_closure.local_features import (  # noqa: F401
    FEATURE_KINDS, MAX_FEATURES, ORB_DESCRIPTOR_BYTES, FeatureExtractor, LocalFeatures, extract_features, match,
    network_scale,
)
# The 5-point solver needs 5 correspondences; fewer matches cannot verify anything.
MIN_MATCHES_FOR_POSE = 5
# ORB allocates for nfeatures up front: 2e9 made every frame fail with std::bad_alloc (issue 20);
# 100k is ~100x what a 640x480 frame yields and ~10 MB of features per frame
# Prefer the 3-DoF rotation-only model when it keeps this share of the essential-matrix inliers.
ROTATION_MODEL_PREFERENCE = 0.8
# A 2-D transfer error vs a 1-D epipolar distance: sqrt(chi2_2 / chi2_1) at 95 %.
TRANSFER_THRESHOLD_SCALE = float(np.sqrt(5.991 / 3.841))
ROTATION_RANSAC_MAX_ITERS = 500
ESSENTIAL_RANSAC_MAX_ITERS = 1000  # OpenCV's default
ESSENTIAL_ESTIMATORS = {"usac": cv2.USAC_DEFAULT, "ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}
# Rotation hypotheses scored per numpy batch (enough for a good pair's adaptive stop in one go).
ROTATION_RANSAC_BATCH = 64


@dataclass
class CameraIntrinsics:
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self):
        if not (self.fx > 0 and self.fy > 0):
            raise ConfigError(f"camera focal lengths must be > 0, got fx={self.fx}, fy={self.fy}")

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)


def default_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """Uncalibrated pinhole guess: focal = 1.2 * max(width, height), principal point = centre."""
    focal = 1.2 * max(width, height)
    return CameraIntrinsics(focal, focal, width / 2.0, height / 2.0)


@dataclass
class GeometryConfig:
    # local features (local_features.py): orb (binary, fast, fails day -> night) | xfeat (learned)
    features: str = "orb"
    # keypoints kept per image (strongest first)
    max_features: int = 1000
    # orb: Lowe's ratio test: best Hamming distance < ratio * second best
    ratio_test: float = 0.8
    # xfeat: mutual nearest neighbours need at least this cosine (XFeat's own default)
    min_cosine: float = 0.82
    # xfeat: the network sees the image shrunk to at most this width (speed; keypoints come
    # back in the input image's pixels)
    max_image_width: int = 640
    # xfeat: narrower images are enlarged to this width for the network (0 = never), and the
    # RANSAC threshold shrinks with them: a small camera is verified as its enlargement
    # (local_features.network_scale; benchmarks/small_cameras.py)
    min_image_width: int = 640
    # xfeat: where the network runs: auto (OpenVINO fp32 when installed: torch's outputs within
    # 1e-5, 2.5x faster) | torch | onnxruntime | openvino (xfeat_features.py)
    xfeat_runtime: str = "auto"
    # RANSAC: max point-to-epipolar-line distance (pixels) and confidence
    ransac_threshold_px: float = 1.5
    ransac_confidence: float = 0.999
    # essential-matrix robust estimator: "usac" (OpenCV's USAC_DEFAULT: LO-RANSAC with SPRT
    # model verification), "magsac" (USAC_MAGSAC: MAGSAC++ scoring, no hard threshold in
    # the score) or "ransac" (plain RANSAC). USAC is 2.4x faster with rotations at
    # least as consistent (benchmarks/verification_consistency.py), so it is the default.
    estimator: str = "usac"
    # a match is "verified" with at least this many inliers
    min_inliers: int = 30
    # images with fewer keypoints than this are not verified at all: on nordland64's 64x32 frames
    # (~40 XFeat keypoints) wrong pairs kept up to 34 essential-matrix inliers, more than true pairs
    # (median 14; even at a 0.15 px threshold 15 vs 8), so inliers there say nothing (docs/loop_closure.md)
    min_keypoints: int = 100
    # images with fewer pixels than this are not verified at all, however many keypoints an
    # enlarged copy yields. Chosen on val (benchmarks/small_cameras.py): from 96x54 (5184 px) up,
    # wrong pairs keep <= 22 inliers (a 640 camera: <= 17); at 64x36 up to 33 and on nordland64's
    # 64x32 up to 36 (true median 18): too close to min_inliers to mean anything
    min_image_pixels: int = 5_000

    def __post_init__(self):
        if self.features not in FEATURE_KINDS:
            raise ConfigError(f"features must be one of {list(FEATURE_KINDS)}, got {self.features!r}")
        if not -1 <= self.min_cosine <= 1:
            raise ConfigError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.max_image_width < 64:
            raise ConfigError(f"max_image_width must be >= 64 pixels, got {self.max_image_width}")
        if not 0 <= self.min_image_width <= self.max_image_width:
            raise ConfigError(f"min_image_width must be in 0..max_image_width ({self.max_image_width}), "
                              f"got {self.min_image_width}")
        if self.xfeat_runtime not in RUNTIMES:
            raise ConfigError(f"xfeat_runtime must be one of {list(RUNTIMES)}, got {self.xfeat_runtime!r}")
        if not MIN_MATCHES_FOR_POSE <= self.max_features <= MAX_FEATURES:
            raise ConfigError(f"max_features must be in {MIN_MATCHES_FOR_POSE}..{MAX_FEATURES}, got {self.max_features}")
        if not 0 < self.ratio_test <= 1:
            raise ConfigError(f"ratio_test must be in (0, 1], got {self.ratio_test}")
        if self.ransac_threshold_px <= 0:
            raise ConfigError(f"ransac_threshold_px must be > 0, got {self.ransac_threshold_px}")
        if not 0 < self.ransac_confidence < 1:
            raise ConfigError(f"ransac_confidence must be in (0, 1), got {self.ransac_confidence}")
        if self.estimator not in ESSENTIAL_ESTIMATORS:
            raise ConfigError(f"estimator must be one of {sorted(ESSENTIAL_ESTIMATORS)}, got {self.estimator!r}")
        if self.min_inliers < MIN_MATCHES_FOR_POSE:
            raise ConfigError(f"min_inliers must be >= {MIN_MATCHES_FOR_POSE}, got {self.min_inliers}")
        if self.min_keypoints < 0:
            raise ConfigError(f"min_keypoints must be >= 0, got {self.min_keypoints}")
        if self.min_image_pixels < 0:
            raise ConfigError(f"min_image_pixels must be >= 0, got {self.min_image_pixels}")


@dataclass
class Verification:
    matches: int  # ratio-test matches
    inliers: int  # RANSAC inliers that also lie in front of both cameras (0: too few matches to try)
    verified: bool  # inliers >= min_inliers
    rotation: np.ndarray | None = None  # (3, 3) query orientation in the candidate frame
    translation: np.ndarray | None = None  # (3,) unit direction of the query position in the candidate frame
    pure_rotation: bool = False  # the rotation-only model won: no baseline, translation = 0
    rotation_covariance: np.ndarray | None = None  # (3, 3) rad^2, see module docstring


def verify(
    query: LocalFeatures,
    candidate: LocalFeatures,
    config: GeometryConfig,
    intrinsics: CameraIntrinsics | None = None,
) -> Verification:
    """Match ``query`` against ``candidate`` and fit the relative camera motion.

    ``intrinsics`` (same camera for both images) or, when None, ``default_intrinsics``
    per image size.
    """
    if (min(len(query), len(candidate)) < config.min_keypoints  # too small or bare to verify anything
            or min(_pixels(query), _pixels(candidate)) < config.min_image_pixels):
        return Verification(matches=0, inliers=0, verified=False)
    iq, ic = match(query, candidate, config.features, config.ratio_test, config.min_cosine)
    if len(iq) < max(config.min_inliers, MIN_MATCHES_FOR_POSE):
        # Fewer matches than the inliers needed: unverifiable, and RANSAC over a handful of
        # mostly wrong matches would run to its iteration limit (the cost of a bad candidate).
        return Verification(matches=len(iq), inliers=0, verified=False)
    kq = intrinsics or default_intrinsics(*query.image_size)
    kc = intrinsics or default_intrinsics(*candidate.image_size)
    pq = _normalise(query.keypoints[iq], kq)
    pc = _normalise(candidate.keypoints[ic], kc)
    focal = float(np.mean([kq.fx, kq.fy, kc.fx, kc.fy]))
    # in normalised units; camera pixels, or the enlarged copy's for a camera XFeat saw enlarged
    threshold = config.ransac_threshold_px * _enlargement_share(query, candidate, config) / focal
    # Normalised coordinates + identity camera: lets the two images have different intrinsics.
    # A verifiable pair has at least min_inliers / matches inliers; RANSAC finds such a
    # model with the configured confidence within max_iters samples, so a wrong candidate
    # with few matches no longer runs OpenCV's 1000 five-point iterations to learn nothing.
    max_iters = min(ESSENTIAL_RANSAC_MAX_ITERS,
                    _ransac_iterations(config.ransac_confidence, config.min_inliers / len(iq), sample_size=5))
    E, mask = cv2.findEssentialMat(
        pq, pc, np.eye(3), method=ESSENTIAL_ESTIMATORS[config.estimator], prob=config.ransac_confidence,
        threshold=threshold, maxIters=max_iters,
    )
    essential_inliers = 0 if E is None or mask is None else int(mask.sum())
    if essential_inliers < max(config.min_inliers, MIN_MATCHES_FOR_POSE):
        # Unverifiable whatever the model (the rotation-only model never keeps more
        # matches than the more general essential matrix): skip the pose work.
        return Verification(matches=len(iq), inliers=essential_inliers, verified=False)

    # Zero baseline makes E degenerate (any translation fits, and cheirality rejects
    # points "at infinity"), so also fit the 3-DoF rotation-only model and prefer it
    # when it explains nearly as many matches as the 5-DoF essential matrix.
    # It only wins with >= ROTATION_MODEL_PREFERENCE * essential_inliers: that share bounds its RANSAC.
    min_share = ROTATION_MODEL_PREFERENCE * essential_inliers / len(iq)
    R_rot, rot_inlier = _fit_rotation(pq, pc, threshold, config.ransac_confidence, min_share)
    if rot_inlier.sum() >= ROTATION_MODEL_PREFERENCE * essential_inliers:
        n_inliers = int(rot_inlier.sum())
        residual_fn = _rotation_residual_fn(R_rot, pq[rot_inlier], pc[rot_inlier], focal)
        return Verification(
            matches=len(iq),
            inliers=n_inliers,
            verified=n_inliers >= config.min_inliers,
            rotation=R_rot,
            translation=np.zeros(3),
            pure_rotation=True,
            rotation_covariance=_rotation_covariance(residual_fn, 3, n_inliers),
        )

    # The 5-point solver may return several stacked solutions; RANSAC's best comes first.
    _, R, t, pose_mask = cv2.recoverPose(E[:3], pq, pc, np.eye(3), mask=mask.copy())
    inlier = pose_mask.ravel() > 0
    n_inliers = int(inlier.sum())
    t = t.ravel() / np.linalg.norm(t)
    residual_fn = _essential_residual_fn(R, t, pq[inlier], pc[inlier], focal)
    return Verification(
        matches=len(iq),
        inliers=n_inliers,
        verified=n_inliers >= config.min_inliers,
        rotation=R,
        translation=t,
        pure_rotation=False,
        rotation_covariance=_rotation_covariance(residual_fn, 5, n_inliers),
    )


def _pixels(features: LocalFeatures) -> int:
    return features.image_size[0] * features.image_size[1]


def _enlargement_share(query: LocalFeatures, candidate: LocalFeatures, config: GeometryConfig) -> float:
    """Image pixels per network pixel for images the network saw enlarged (mean of the two), else 1.

    XFeat localises keypoints to about a pixel of what the network saw; in an enlarged image
    that is a fraction of a camera pixel, and a threshold left at camera pixels lets wrong
    pairs keep 1.5-2x the inliers (benchmarks/small_cameras.py).
    """
    if config.features != "xfeat":
        return 1.0
    return float(np.mean([min(1.0, 1.0 / network_scale(f.image_size[0], config.min_image_width,
                                                       config.max_image_width)) for f in (query, candidate)]))


def verify_many(
    query: LocalFeatures,
    candidates: list[LocalFeatures],
    config: GeometryConfig,
    intrinsics: CameraIntrinsics | None = None,
    pool: Executor | None = None,
) -> list[Verification]:
    """``verify`` of ``query`` against each candidate, on ``pool``'s threads when given (OpenCV's
    RANSAC and faiss release the GIL; each pair's result does not depend on the others')."""
    def run(candidate: LocalFeatures) -> Verification:
        return verify(query, candidate, config, intrinsics)

    return list(pool.map(run, candidates) if pool is not None and len(candidates) > 1 else map(run, candidates))


def _ransac_iterations(confidence: float, inlier_share: float, sample_size: int) -> int:
    """Samples needed to draw one all-inlier sample with probability ``confidence``."""
    p_good = min(max(inlier_share, 1e-6), 1.0) ** sample_size
    if p_good >= 1.0:
        return 1
    return max(1, int(np.ceil(np.log(1 - confidence) / np.log1p(-p_good))))


def _fit_rotation(pq: np.ndarray, pc: np.ndarray, threshold: float, confidence: float, min_share: float):
    """RANSAC over the rotation-only model ``x_c ~ R x_q`` (2-point Kabsch on bearing vectors).

    A general homography would also fit pure rotation, but its 8 DoF absorb noise into
    perspective terms that are not a rotation; solving for R directly keeps 3 DoF.
    Hypotheses are scored in batches of ``ROTATION_RANSAC_BATCH`` with numpy (one
    stacked SVD, one (batch, N) error matrix): a Python loop per hypothesis cost up to
    ~0.5 s on a low-inlier pair that ran to the iteration limit. The adaptive stopping
    rule is applied after each batch, so a batch may score a few more hypotheses than
    strictly needed (never fewer). ``min_share``: the smallest inlier share that matters to
    the caller, which caps the iterations. Returns ``(R, inlier mask)`` (R refined on all inliers).
    """
    transfer_threshold = threshold * TRANSFER_THRESHOLD_SCALE
    bq, bc = _bearings(pq), _bearings(pc)
    rng = np.random.default_rng(0)  # deterministic: the same pair always gives the same answer
    iterations = min(ROTATION_RANSAC_MAX_ITERS, _ransac_iterations(confidence, min_share, sample_size=2))
    best_R, best_inlier, done = np.eye(3), np.zeros(len(pq), bool), 0
    while done < iterations:
        n = min(ROTATION_RANSAC_BATCH, iterations - done)
        # n uniform pairs of distinct correspondences
        first = rng.integers(0, len(pq), n)
        second = rng.integers(0, len(pq) - 1, n)
        second += second >= first
        samples = np.stack([first, second], axis=1)
        Rs = _kabsch(bq[samples], bc[samples])
        inliers = np.linalg.norm(_rotate_project(Rs, pq) - pc, axis=-1) < transfer_threshold
        counts = inliers.sum(axis=1)
        j = int(np.argmax(counts))  # first best, as a sequential loop keeping strict improvements
        if counts[j] > best_inlier.sum():
            best_R, best_inlier = Rs[j], inliers[j]
            iterations = min(iterations, _ransac_iterations(confidence, best_inlier.mean(), sample_size=2))
        done += n
    if best_inlier.sum() < 2:
        return best_R, best_inlier
    R = _kabsch(bq[best_inlier], bc[best_inlier])
    return R, np.linalg.norm(_rotate_project(R, pq) - pc, axis=1) < transfer_threshold


def _bearings(points: np.ndarray) -> np.ndarray:
    rays = np.hstack([points, np.ones((len(points), 1))])
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum ||b_i - R a_i||^2 (unit vectors); (..., N, 3) -> (..., 3, 3)."""
    U, _, Vt = np.linalg.svd(np.swapaxes(b, -1, -2) @ a)
    D = np.ones(U.shape[:-1])
    D[..., 2] = np.linalg.det(U @ Vt)  # a reflection is not a rotation
    return (U * D[..., None, :]) @ Vt


def _rotation_covariance(residual_fn, n_params: int, n_residual_points: int) -> np.ndarray | None:
    """``sigma^2 (J^T J)^+`` over all pose parameters, rotation block (first 3) returned."""
    r0 = residual_fn(np.zeros(n_params))
    dof = len(r0) - n_params
    if n_residual_points < MIN_MATCHES_FOR_POSE or dof < 1:
        return None
    step = 1e-6
    J = np.stack([(residual_fn(step * np.eye(n_params)[i]) - r0) / step for i in range(n_params)], axis=1)
    sigma2 = float(r0 @ r0) / dof
    # pinv: near-degenerate motions leave the translation direction unobservable
    return (sigma2 * np.linalg.pinv(J.T @ J))[:3, :3]


def _essential_residual_fn(R, t, pq, pc, focal):
    """Sampson errors (px) as a function of (rotation perturbation, 2 translation-direction offsets)."""
    b1, b2 = _tangent_basis(t)

    def residuals(params: np.ndarray) -> np.ndarray:
        R_ = cv2.Rodrigues(params[:3])[0] @ R
        t_ = t + params[3] * b1 + params[4] * b2
        return _sampson_px(R_, t_ / np.linalg.norm(t_), pq, pc, focal)

    return residuals


def _rotation_residual_fn(R, pq, pc, focal):
    """Transfer errors (px, x and y stacked) as a function of a rotation perturbation."""

    def residuals(params: np.ndarray) -> np.ndarray:
        return focal * (_rotate_project(cv2.Rodrigues(params)[0] @ R, pq) - pc).ravel()

    return residuals


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.linalg.norm(cv2.Rodrigues(R)[0])))


def _normalise(points_px: np.ndarray, k: CameraIntrinsics) -> np.ndarray:
    return np.stack([(points_px[:, 0] - k.cx) / k.fx, (points_px[:, 1] - k.cy) / k.fy], axis=1).astype(np.float64)


def _rotate_project(R: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Normalised points -> rotated by R (3, 3) or each of a stack (H, 3, 3) -> normalised coordinates."""
    rays = np.hstack([points, np.ones((len(points), 1))]) @ np.swapaxes(R, -1, -2)
    return rays[..., :2] / rays[..., 2:3]


def _sampson_px(R: np.ndarray, t: np.ndarray, pq: np.ndarray, pc: np.ndarray, focal: float) -> np.ndarray:
    """Signed Sampson distance of each correspondence to E = [t]x R, in pixels."""
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = tx @ R
    xq = np.hstack([pq, np.ones((len(pq), 1))])
    xc = np.hstack([pc, np.ones((len(pc), 1))])
    Exq = xq @ E.T  # epipolar lines in the candidate image
    Etxc = xc @ E  # epipolar lines in the query image
    algebraic = np.sum(xc * Exq, axis=1)
    denom = np.sqrt(Exq[:, 0] ** 2 + Exq[:, 1] ** 2 + Etxc[:, 0] ** 2 + Etxc[:, 1] ** 2)
    return focal * algebraic / np.maximum(denom, 1e-12)


def _tangent_basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.eye(3)[np.argmin(np.abs(t))]
    b1 = np.cross(t, helper)
    b1 /= np.linalg.norm(b1)
    return b1, np.cross(t, b1)
