"""Loop-closure decisions over a map database: threshold, recency exclusion, consistency.

``LoopDetector.detect`` takes one query (global descriptor + capture stamp, optionally
ORB features) and returns the candidates that pass the rules, best first, plus whether
the temporal-consistency rule fired:

1. Retrieval: the top ``top_k`` keyframes by cosine similarity (``MapDatabase.query``).
   With ``exclude_recent`` (mapping mode) keyframes stamped later than
   ``query stamp - exclude_recent_s`` are ignored: a robot always "matches" the frames
   it has just seen. A localization map comes from an earlier session, so nothing is
   excluded there.
2. Threshold: candidates scoring below ``score_threshold`` are dropped.
3. Geometric verification (``verification`` = annotate | require, needs query features
   and keyframes stored with features): each candidate is checked with
   ``geometry.verify`` and the candidates are **re-ranked by inliers** (then by score):
   a global descriptor's top 5 holds the true place far more often than its top 1, and
   learned local features tell it apart (docs/loop_closure.md). ``require`` then drops
   unverified candidates (fewer than ``min_inliers``), ``annotate`` keeps them.
   Each candidate's ``loop_score`` is what the final decision and the precision-recall
   sweeps rank by: its inliers when verification ran, else its score.
4. Temporal consistency: a loop closure is accepted after ``consistency_k`` consecutive
   queries whose best candidates agree. Two best candidates agree when their map ids
   differ by at most ``consistency_window``: ids are sequential in keyframe order, so a
   robot driving along a previously mapped stretch matches keyframes whose ids grow
   roughly one per query; the window absorbs differing speeds and keyframe spacing
   between the two passes. A query without candidates breaks the streak.
   ``consistency_k = 1`` accepts every detection.

Sequence matching (``sequence.length`` > 1, ``structvpr_core.retrieval.sequence``): step 1
becomes "the top ``top_k`` keyframes by sequence score": the query's similarity to every
keyframe (flat index) is pushed into a ``SequenceMatcher``, which scores each keyframe
as the end of a sequence retraced by this query and the ones before it; recency
exclusion limits which keyframes may end a sequence. Step 2 then uses
``sequence_score_threshold`` (a z-score, not a cosine). ``sequence_candidates = both``
appends the single-frame candidates (``score_threshold``) not already listed, after
the sequence ones. ``sequence.length`` = 1 is exactly the single-frame behaviour.

Which frames get that far: ``KeyframeSelector`` (stamp time and distance since the last
keyframe) and ``PoseBuffer`` (the odometry pose nearest an image's stamp).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from structvpr_core.config import ConfigError
from structvpr_core.loop_closure.geometry import CameraIntrinsics, GeometryConfig, LocalFeatures, Verification, verify_many
from structvpr_core.retrieval.map_database import QUATERNION_NORM_TOLERANCE, MapDatabase
from structvpr_core.retrieval.sequence import SequenceConfig, SequenceMatcher, top_k
from structvpr_core.runtime.threads import apply_in_this_thread, max_threads

NS_PER_S = 1_000_000_000
# Upper bounds of the size-like settings (each allocates or loops per query with it)
MAX_TOP_K = 1000
MAX_CONSISTENCY_K = 10_000


@dataclass
class LoopClosureConfig:
    """Defaults = the node's shipped defaults (config/structvpr.yaml; chosen on the val missions for
    precision 1.0 at the highest recall, docs/loop_closure.md; a test keeps the two equal)."""

    # candidates retrieved per query
    top_k: int = 5
    # minimum cosine similarity of a candidate, in [-1, 1]
    score_threshold: float = 0.5
    # mapping mode: ignore keyframes newer than query stamp - exclude_recent_s
    exclude_recent_s: float = 30.0
    # consecutive agreeing queries needed to accept a loop closure (1 = every detection)
    consistency_k: int = 1
    # best candidates of consecutive queries agree when their map ids differ by <= this
    consistency_window: int = 3
    # geometric verification: off | annotate (fill in inliers/pose) | require (drop unverified)
    verification: Literal["off", "annotate", "require"] = "require"
    geometry: GeometryConfig = field(default_factory=lambda: GeometryConfig(features="xfeat", max_features=1024,
                                                                            min_inliers=40))
    # candidates verified at once (threads; OpenCV's RANSAC and faiss release the GIL). The
    # encoder has finished when verification runs, so on 2 cores both are free for it.
    verification_threads: int = 2
    # sequence matching; length 1 = single-frame
    sequence: SequenceConfig = field(default_factory=lambda: SequenceConfig(length=3))
    # sequence matches: minimum sequence score (z-score: standard deviations above the query's typical sequence)
    sequence_score_threshold: float = 0.0
    # sequence: sequence candidates only | both: then single-frame candidates not already listed
    sequence_candidates: Literal["sequence", "both"] = "sequence"

    def __post_init__(self):
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise ConfigError(f"top_k must be in 1..{MAX_TOP_K}, got {self.top_k}")
        if not -1.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold is a cosine similarity and must be in [-1, 1], got {self.score_threshold}")
        if self.exclude_recent_s < 0:
            raise ConfigError(f"exclude_recent_s must be >= 0, got {self.exclude_recent_s}")
        if not 1 <= self.consistency_k <= MAX_CONSISTENCY_K:
            raise ConfigError(f"consistency_k must be in 1..{MAX_CONSISTENCY_K}, got {self.consistency_k}")
        if self.consistency_window < 0:
            raise ConfigError(f"consistency_window must be >= 0, got {self.consistency_window}")
        if self.verification not in ("off", "annotate", "require"):
            raise ConfigError(f"verification must be off, annotate or require, got {self.verification!r}")
        if not 1 <= self.verification_threads <= max_threads():
            raise ConfigError(f"verification_threads must be in 1..{max_threads()} (4x this machine's cores), "
                              f"got {self.verification_threads}")
        if not np.isfinite(self.sequence_score_threshold):
            raise ConfigError(f"sequence_score_threshold must be a finite number, got {self.sequence_score_threshold}")
        if self.sequence_candidates not in ("sequence", "both"):
            raise ConfigError(f"sequence_candidates must be sequence or both, got {self.sequence_candidates!r}")


@dataclass
class SequenceSpan:
    start_map_id: int  # keyframe matched to the sequence's first query (map_id: to the current one)
    velocity: float  # map keyframes per query; negative = map traversed backwards


@dataclass
class Candidate:
    map_id: int
    score: float  # cosine similarity, or the sequence score when ``sequence`` is set
    verification: Verification | None = None  # None: verification not run for this candidate
    sequence: SequenceSpan | None = None  # None: a single-frame match

    @property
    def loop_score(self) -> float:
        """What the final decision ranks by: verified inliers when verification ran, else the score."""
        return float(self.score if self.verification is None else self.verification.inliers)


@dataclass
class Detection:
    candidates: list[Candidate]  # passed all rules, best first (empty: nothing passed)
    streak: int  # consecutive agreeing queries including this one (0 without candidates)
    consistent: bool  # streak >= consistency_k
    sequence_length: int = 1  # queries the sequence scores span (fewer than configured at a run's start)
    sequence_start_stamp_ns: int = 0  # stamp of the sequence's first query (= this query's when length 1)
    verification_ms: float = 0.0  # wall time of the candidates' geometric verification
    # every candidate that passed the score threshold, verified and ranked, before ``require``
    # and consistency: what an evaluation sweeps its final threshold over
    ranked: list[Candidate] = field(default_factory=list)

    @property
    def loop_closed(self) -> bool:
        return self.consistent and bool(self.candidates)


class LoopDetector:
    def __init__(self, db: MapDatabase, config: LoopClosureConfig, intrinsics: CameraIntrinsics | None = None):
        self.db = db
        self.config = config
        self.intrinsics = intrinsics  # None: geometry.default_intrinsics per image size
        self._matcher = SequenceMatcher(config.sequence) if config.sequence.length > 1 else None
        # each pool thread applies the process's compute-thread count (faiss's OpenMP is per thread)
        self._verify_pool = (ThreadPoolExecutor(config.verification_threads, "structvpr_verify", apply_in_this_thread)
                             if config.verification != "off" and config.verification_threads > 1 else None)
        self._query_stamps: deque[int] = deque(maxlen=config.sequence.length)
        self.reset()

    def reset(self) -> None:
        """Forget the consistency and sequence history (after a map reset or a jump back in time)."""
        self._reset_consistency()
        self._query_stamps.clear()
        if self._matcher is not None:
            self._matcher.reset()

    def _reset_consistency(self) -> None:
        self._streak = 0
        self._last_best: int | None = None

    def detect(
        self,
        descriptor: np.ndarray,
        stamp_ns: int,
        exclude_recent: bool,
        features: LocalFeatures | None = None,
    ) -> Detection:
        cfg = self.config
        cutoff = stamp_ns - round(cfg.exclude_recent_s * NS_PER_S) if exclude_recent else None
        self._query_stamps.append(int(stamp_ns))
        if self._matcher is None:
            hits = self.db.query(descriptor, cfg.top_k, exclude_newer_than_ns=cutoff)
            candidates = [Candidate(i, s) for i, s in hits if s >= cfg.score_threshold]
            length = 1
        else:
            candidates, length = self._sequence_candidates(descriptor, cutoff)
        verification_ms = 0.0
        if cfg.verification != "off" and features is not None:
            started = time.perf_counter()
            candidates = self._verify(candidates, features)
            verification_ms = (time.perf_counter() - started) * 1e3
        ranked = candidates
        if cfg.verification == "require":
            candidates = [c for c in ranked if c.verification is not None and c.verification.verified]
        return Detection(candidates, *self._update_consistency(candidates), length, self._query_stamps[-length],
                         verification_ms, ranked)

    def _sequence_candidates(self, descriptor: np.ndarray, cutoff_ns: int | None) -> tuple[list[Candidate], int]:
        cfg = self.config
        similarity = self.db.similarities(descriptor)
        eligible = None if cutoff_ns is None else self.db.stamps_ns <= cutoff_ns
        result = self._matcher.push(similarity, eligible)
        candidates = [Candidate(int(i), float(result.scores[i]),
                                sequence=SequenceSpan(int(result.start_ids[i]), float(result.velocities[i])))
                      for i in top_k(result.scores, cfg.top_k)
                      if np.isfinite(result.scores[i]) and result.scores[i] >= cfg.sequence_score_threshold]
        if cfg.sequence_candidates == "both":
            listed = {c.map_id for c in candidates}
            single = similarity if eligible is None else np.where(eligible, similarity, -np.inf)
            candidates += [Candidate(int(i), float(single[i])) for i in top_k(single, cfg.top_k)
                           if single[i] >= cfg.score_threshold and int(i) not in listed]
        return candidates, result.length

    def _verify(self, candidates: list[Candidate], features: LocalFeatures) -> list[Candidate]:
        # keyframes added without features cannot be verified
        pairs = [(c, self.db.keyframe(c.map_id).features) for c in candidates]
        pairs = [(c, stored) for c, stored in pairs if stored is not None]
        results = verify_many(features, [stored for _, stored in pairs], self.config.geometry, self.intrinsics,
                              self._verify_pool)
        for (c, _), verification in zip(pairs, results):
            c.verification = verification
        # re-rank: verified first, then by inliers, then by score (stable: candidates are best score first)
        return sorted(candidates, key=lambda c: (c.verification is None or not c.verification.verified,
                                                 -(c.verification.inliers if c.verification else -1)))

    def _update_consistency(self, candidates: list[Candidate]) -> tuple[int, bool]:
        if not candidates:
            self._reset_consistency()
            return 0, False
        best = candidates[0].map_id
        agrees = self._last_best is not None and abs(best - self._last_best) <= self.config.consistency_window
        self._streak = self._streak + 1 if agrees else 1
        self._last_best = best
        return self._streak, self._streak >= self.config.consistency_k


class KeyframeSelector:
    """Which incoming frames become queries/keyframes: enough time (stamp) and distance since the last.

    Uses message stamps, not the wall clock, so bag replay with use_sim_time behaves
    like the live run. ``position`` is None when no odometry is associated with the frame;
    then only the time rule applies.
    """

    def __init__(self, min_interval_s: float, min_distance_m: float):
        self.min_interval_ns = round(min_interval_s * NS_PER_S)
        self.min_distance_m = min_distance_m
        self.reset()

    def reset(self) -> None:
        self.last_stamp_ns: int | None = None
        self._last_position: np.ndarray | None = None

    def accepts(self, stamp_ns: int, position: np.ndarray | None) -> bool:
        if self.last_stamp_ns is None:
            return True
        if stamp_ns - self.last_stamp_ns < self.min_interval_ns:
            return False
        if self.min_distance_m > 0 and position is not None and self._last_position is not None:
            return float(np.linalg.norm(position - self._last_position)) >= self.min_distance_m
        return True

    def commit(self, stamp_ns: int, position: np.ndarray | None) -> None:
        """Record a frame that was actually processed (a frame that failed to decode is not a keyframe)."""
        self.last_stamp_ns = stamp_ns
        self._last_position = None if position is None else np.asarray(position, np.float64)


def checked_pose(pose7) -> np.ndarray:
    """``x y z qx qy qz qw`` as float64 with the quaternion normalised; ``ValueError`` for a pose
    that is not one (NaN/inf, or a quaternion off unit length, e.g. all zeros)."""
    pose = np.asarray(pose7, np.float64).reshape(-1)
    if pose.shape != (7,) or not np.isfinite(pose).all():
        raise ValueError(f"pose must be 7 finite numbers x y z qx qy qz qw, got {pose.tolist()}")
    norm_sq = float(pose[3:] @ pose[3:])
    if abs(norm_sq - 1) > QUATERNION_NORM_TOLERANCE:
        raise ValueError(f"orientation {pose[3:].tolist()} is not a unit quaternion (norm {norm_sq ** 0.5:.3g})")
    pose[3:] /= norm_sq**0.5
    return pose


class PoseBuffer:
    """Odometry poses by stamp; an image takes the pose nearest its stamp if within ``max_offset_s``.

    ``add`` refuses a pose that is not one (``checked_pose``), so lookups never return it.

    The node keeps the latest ``capacity`` poses (by arrival); the offline tools hold a whole
    bag's (``capacity=None``). Stamps are kept sorted, so a lookup is a bisection.
    """

    def __init__(self, max_offset_s: float, capacity: int | None = 1000):
        if not (max_offset_s >= 0 and math.isfinite(max_offset_s)):
            raise ConfigError(f"odometry max offset must be a finite number >= 0 s, got {max_offset_s}")
        self.max_offset_ns = round(max_offset_s * NS_PER_S)
        self.capacity = capacity
        self._arrivals: deque[int] = deque()  # stamps in arrival order, to evict the oldest
        self._stamps: list[int] = []  # sorted
        self._poses: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # odometry arrives on the executor thread, lookups on the worker

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, pose7: np.ndarray) -> None:
        pose = checked_pose(pose7)
        with self._lock:
            if stamp_ns not in self._poses:
                bisect.insort(self._stamps, stamp_ns)
                self._arrivals.append(stamp_ns)
            self._poses[stamp_ns] = pose  # a repeated stamp: the newer pose
            if self.capacity is not None and len(self._arrivals) > self.capacity:
                oldest = self._arrivals.popleft()
                del self._poses[oldest]
                del self._stamps[bisect.bisect_left(self._stamps, oldest)]

    def pose_at(self, stamp_ns: int) -> np.ndarray | None:
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            near = [self._stamps[j] for j in (i - 1, i) if 0 <= j < len(self._stamps)]
            if not near:
                return None
            best = min(near, key=lambda s: abs(s - stamp_ns))
            return self._poses[best] if abs(best - stamp_ns) <= self.max_offset_ns else None
