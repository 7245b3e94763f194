"""Missions: SLAM-style runs built from the shared data, scored in mapping mode.

A mission is one stream of frames that revisits places: a traversal, then another of the
same route (another condition or viewpoint), or a site's monthly sessions one after the
other. It is played through the node's own detector (``LoopDetector``) in mapping mode:
every frame first queries the map built so far (recency excluded) and is then added.
Most queries of the first pass are new places, where anything published is a false
positive (``evaluation.loop_scoring``).

Ground truth: each frame has a position along its route (frame number; GRIEF: the place),
and a revisit of query q is a frame within ``revisit_radius`` of it that is older than the
exclusion window (``exclude_recent_s``: the detector may not return what it excludes).

Splits by frames, declared here once (``MISSIONS``): val missions choose defaults, test
missions report. Gardens Point val = frames 0..99, test = 100..199 (the shipped model
trained on Gardens Point frames 0..129, so its val missions are partly training
frames: the decisions tuned on them are verification thresholds, which that model never
saw); nordland64 val / test = the data set's val / test stretches; GRIEF val = michigan
(a training site of the shipped model), test = stromovka.

Stamps: frames ``1 / rate_hz`` apart, passes ``PASS_GAP_S`` apart (a robot driving the
route again later).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from structvpr_core.data.datasets import GARDENSPOINT_SOFT_TOLERANCE, _read_grief_site
from structvpr_core.data.sequence import frame_number
from structvpr_core.evaluation.ground_truth import revisits
from structvpr_core.evaluation.loop_scoring import QueryOutcome, score_run
from structvpr_core.loop_closure.candidates import NS_PER_S, LoopClosureConfig, LoopDetector
from structvpr_core.loop_closure.geometry import LocalFeatures
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity

PASS_GAP_S = 60.0
MISSION_START_S = 1_700_000_000.0


@dataclass(frozen=True)
class MissionFrame:
    path: Path
    position: float  # along the route (frame number, or place id)
    stamp_ns: int
    traversal: str  # which pass it belongs to (folder or session)


@dataclass(frozen=True)
class Mission:
    name: str
    split: Literal["val", "test"]
    condition: Literal["same", "cross"]  # the revisits' conditions: same (viewpoint only) or changed
    revisit_radius: float  # position units (frame numbers; GRIEF: places)
    load: Callable[[Path], list[tuple[Path, float, str]]]  # data root -> (image, position, pass) in play order
    rate_hz: float = 1.0

    def frames(self, data_root: Path) -> list[MissionFrame]:
        rows = self.load(data_root)
        if not rows:
            raise ValueError(f"mission {self.name}: no frames under {data_root}")
        missing = [str(p) for p, _, _ in rows if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"mission {self.name}: {len(missing)} images missing, e.g. {missing[0]}")
        out, t, last_pass = [], MISSION_START_S, rows[0][2]
        for path, position, traversal in rows:
            if traversal != last_pass:
                t += PASS_GAP_S
                last_pass = traversal
            out.append(MissionFrame(path, float(position), round(t * NS_PER_S), traversal))
            t += 1.0 / self.rate_hz
        return out


def _passes(folders: tuple[str, ...], frames: tuple[int, int]) -> Callable[[Path], list]:
    """Aligned traversals (same frame number = same place), played one after another."""
    def load(root: Path) -> list[tuple[Path, float, str]]:
        rows = []
        for folder in folders:
            images = sorted((p for p in (root / folder).iterdir() if frame_number(p) is not None), key=frame_number)
            rows += [(p, float(frame_number(p)), folder) for p in images if frames[0] <= frame_number(p) <= frames[1]]
        return rows
    return load


def _grief_sessions(site: str) -> Callable[[Path], list]:
    """A GRIEF site's 12 monthly sessions one after another, each visiting its 5 places."""
    def load(root: Path) -> list[tuple[Path, float, str]]:
        images, sessions, places = _read_grief_site(root / "grief_seasons" / site)
        order = np.lexsort((places, sessions))
        return [(images[i], float(places[i]), f"{site} session {sessions[i]:02d}") for i in order]
    return load


def _gardenspoint(name: str, split: str, first: str, second: str, condition: str) -> Mission:
    frames = (0, 99) if split == "val" else (100, 199)
    return Mission(name, split, condition, GARDENSPOINT_SOFT_TOLERANCE,
                   _passes((f"gardenspoint/{first}", f"gardenspoint/{second}"), frames))


MISSIONS: tuple[Mission, ...] = tuple(
    [_gardenspoint(f"gardenspoint day_right->night_right {s}", s, "day_right", "night_right", "cross")
     for s in ("val", "test")]
    + [_gardenspoint(f"gardenspoint day_left->day_right {s}", s, "day_left", "day_right", "same")
       for s in ("val", "test")]
    + [Mission("nordland64 summer->winter val", "val", "cross", 10,
               _passes(("nordland64/summer", "nordland64/winter"), (24000, 28990))),
       Mission("nordland64 summer->winter test", "test", "cross", 10,
               _passes(("nordland64/summer", "nordland64/winter"), (29000, 35760))),
       Mission("grief michigan sessions val", "val", "cross", 0, _grief_sessions("michigan")),
       Mission("grief stromovka sessions test", "test", "cross", 0, _grief_sessions("stromovka"))]
)


def missions(split: str | None = None) -> list[Mission]:
    if split not in (None, "val", "test"):
        raise ValueError(f"mission split must be val or test, got {split!r}")
    return [m for m in MISSIONS if split is None or m.split == split]


@dataclass
class MissionRun:
    """One outcome per keyframe (= map id): frames the model could not describe are skipped."""

    frames: list[MissionFrame]  # the keyframes, in map order
    outcomes: list[QueryOutcome]
    skipped: int  # frames skipped as invalid
    verification_ms: list[float]

    def revisits(self, radius: float, exclude_recent_s: float) -> list[np.ndarray]:
        return revisits([f.stamp_ns for f in self.frames], [f.position for f in self.frames], radius,
                        exclude_recent_s)

    def labels(self) -> list[str]:
        return [f"{f.traversal}/{f.path.name}" for f in self.frames]

    def score(self, radius: float, exclude_recent_s: float) -> dict:
        """``score_run``, and for each worst false positive its ``offset``: how far (position units) the
        candidate is from the query, i.e. whether it is a neighbouring view or another place."""
        labels = self.labels()
        result = score_run(self.revisits(radius, exclude_recent_s), self.outcomes, labels, dict(enumerate(labels)))
        by_label = {label: f.position for label, f in zip(labels, self.frames)}
        for row in result.get("worst_false_positives", []):
            row["offset"] = abs(by_label[row["candidate"]] - by_label[row["query"]])
        return result


def play_mission(frames: list[MissionFrame], descriptors: np.ndarray, config: LoopClosureConfig,
                 features: list[LocalFeatures | None] | None = None) -> MissionRun:
    """Mapping mode through ``LoopDetector``: query each frame against the map so far, then add it.

    ``descriptors[i]`` (already encoded, L2-normalised; a zero row = a frame the model could not
    describe, skipped as the node skips it) and ``features[i]`` (local features for verification).
    """
    if len(descriptors) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(descriptors)} descriptors")
    db = MapDatabase(ModelIdentity("mission", int(descriptors.shape[1])))
    detector = LoopDetector(db, config)
    keyframes: list[MissionFrame] = []
    outcomes: list[QueryOutcome] = []
    timings: list[float] = []
    for i, frame in enumerate(frames):
        if not descriptors[i].any():
            continue
        feats = None if features is None else features[i]
        det = detector.detect(descriptors[i], frame.stamp_ns, exclude_recent=True, features=feats)
        top = det.ranked[0] if det.ranked else None
        details = {} if top is None or top.verification is None else {
            "inliers": top.verification.inliers, "global_score": round(top.score, 4)}
        outcomes.append(QueryOutcome([(c.map_id, c.loop_score) for c in det.ranked],
                                     det.candidates[0].map_id if det.loop_closed else None, details))
        timings.append(det.verification_ms)
        keyframes.append(frame)
        db.add(descriptors[i], frame.stamp_ns, frame.traversal, features=feats)
    return MissionRun(keyframes, outcomes, len(frames) - len(keyframes), timings)


def write_poses_csv(frames: list[MissionFrame], images_root: Path, path: Path) -> Path:
    """A ``make-bag --poses`` CSV of a mission: image (relative to ``images_root``), x = position, stamp (s)."""
    from structvpr_core.io_utils import atomic_write_text

    rows = ["image,x,y,stamp"] + [f"{f.path.relative_to(images_root)},{f.position:g},0,{f.stamp_ns / NS_PER_S:.9f}"
                                  for f in frames]
    return atomic_write_text(path, "\n".join(rows) + "\n")
