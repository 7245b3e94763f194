"""Sequence matching: score map keyframes by how well the last L queries retrace the map.

A robot revisiting a place drives along a stretch it mapped before, so a loop closure
is a *sequence* of agreeing matches, not one frame (SeqSLAM, Milford & Wyeth 2012).
``SequenceMatcher`` is the causal, incremental form: each new query pushes its
similarity row (one value per map keyframe, higher = more similar) and gets back, per
map keyframe j, the score of the best sequence that *ends* at j with the current query:

    score[j] = max over velocities v of  mean_{k=0..L'-1}  S[t-k, j - round(v k)]

(``j + round(v k)`` for reverse traversal, v < 0). ``L' = min(L, queries since reset)``,
so the first queries of a run still answer, with shorter sequences. Velocities are in
map keyframes per query: 1 = the same speed and keyframe spacing as when mapping, < 1
slower (0 = standing still), > 1 faster. A sequence must lie entirely inside the map
(each of its rows as long as the map was when that row was pushed: in mapping mode the
map grows); keyframes no sequence reaches score ``-inf``.

Normalisation of each similarity row, chosen per descriptor (measured, see
docs/sequence.md):
- ``none``: the score is the mean similarity along the sequence: with cosine
  similarity it stays on the single-frame scale [-1, 1], so one threshold means the
  same for every L and every run length.
- ``local_contrast``: SeqSLAM's local contrast enhancement: each row entry becomes
  its z-score within +-``contrast_window`` map keyframes. Raw pixels need it; it
  hurt learned descriptors in the measurements that motivated this module. The score
  is then a mean z-score (unitless; thresholds of a few units).

Score normalisation (``score_normalization``), applied to each query's scores last:
- ``zscore`` (default): the scores become (score - mean) / std over the map keyframes
  the query may match, i.e. how many standard deviations the sequence stands out from
  this query's typical sequence. The same threshold then means the same whatever the
  descriptor, the row normalisation, L or the place's overall similarity level (on
  nordland64 val it raised PR-AUC and recall at 100 % precision for every descriptor,
  docs/sequence.md). An affine map per query: it never changes the ranking.
- ``none``: the mean along the sequence as it is.

Cost per query: one O(N) normalisation, then O(V x L x N) vectorised slice additions
over a ring buffer holding the last L rows (V = distinct velocity lines).
``sequence_scores`` (offline, whole query sets) is defined as running the online
matcher, so offline and online results are identical by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from structvpr_core.config import ConfigError

NORMALIZATIONS = ("none", "local_contrast")
# measured on nordland64 val (docs/sequence.md): local contrast lifted raw pixels at L = 10
# from 41.0 to 65.8 % R@1 and cut the learned students from 68.8 / 69.6 to 46.8 / 51.2 %
RAW_PIXEL_NORMALIZATION = "local_contrast"
LEARNED_NORMALIZATION = "none"
SCORE_NORMALIZATIONS = ("zscore", "none")
METRICS = ("cosine", "euclidean")
# a local-contrast window with (numerically) constant similarities: no contrast to enhance
MIN_CONTRAST_STD = 1e-6
# Upper bounds: the matcher holds L rows of N map scores and tries V velocity lines per query
# (O(V x L x N)); 1e8 grew the node to 21.7 GB before the OOM killer (issue 20). SeqSLAM uses
# L ~ 10..50; 1000 x 100 already costs ~1e5 x N operations per query.
MAX_LENGTH = 1000
MAX_VELOCITY_STEPS = 100


@dataclass
class SequenceConfig:
    # queries per sequence (the current one and L-1 before it); 1 = single-frame matching
    length: int = 10
    # velocity range in map keyframes per query (1 = same speed/spacing as the map)
    min_velocity: float = 0.8
    max_velocity: float = 1.25
    # velocities tried, evenly spaced over [min_velocity, max_velocity]
    velocity_steps: int = 5
    # also score the map traversed backwards
    reverse: bool = False
    normalization: Literal["none", "local_contrast"] = "none"
    # local_contrast: half window in map keyframes
    contrast_window: int = 10
    score_normalization: Literal["zscore", "none"] = "zscore"

    def __post_init__(self):
        if not 1 <= self.length <= MAX_LENGTH:
            raise ConfigError(f"sequence length must be in 1..{MAX_LENGTH}, got {self.length}")
        if not 0 <= self.min_velocity <= self.max_velocity:
            raise ConfigError(f"sequence velocities need 0 <= min_velocity <= max_velocity, "
                              f"got {self.min_velocity}..{self.max_velocity}")
        if not 1 <= self.velocity_steps <= MAX_VELOCITY_STEPS:
            raise ConfigError(f"velocity_steps must be in 1..{MAX_VELOCITY_STEPS}, got {self.velocity_steps}")
        if self.velocity_steps == 1 and self.min_velocity != self.max_velocity:
            raise ConfigError("velocity_steps 1 needs min_velocity == max_velocity (which single velocity?)")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"sequence normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.score_normalization not in SCORE_NORMALIZATIONS:
            raise ConfigError(f"score_normalization must be one of {SCORE_NORMALIZATIONS}, "
                              f"got {self.score_normalization!r}")
        if self.contrast_window < 1:
            raise ConfigError(f"contrast_window must be >= 1, got {self.contrast_window}")

    def velocities(self) -> np.ndarray:
        """Signed velocities tried (negative = reverse traversal)."""
        forward = np.linspace(self.min_velocity, self.max_velocity, self.velocity_steps)
        return np.concatenate([forward, -forward[forward > 0]]) if self.reverse else forward


def normalization_for(model: str) -> str:
    """The measured row normalisation for a model spec (baseline name or checkpoint)."""
    return RAW_PIXEL_NORMALIZATION if model == "raw-pixel" else LEARNED_NORMALIZATION


@dataclass
class SequenceScores:
    scores: np.ndarray  # (N,) float64, best sequence ending at each map keyframe; -inf: none fits / not eligible
    length: int  # queries in the sequences (L' <= L: fewer at the start of a run)
    start_ids: np.ndarray  # (N,) int64 map keyframe matched to the sequence's first query (-1: none)
    velocities: np.ndarray  # (N,) float64 velocity of the best sequence (NaN: none)


class SequenceMatcher:
    def __init__(self, config: SequenceConfig):
        self.config = config
        velocities = config.velocities()
        steps = np.arange(config.length)
        offsets = np.rint(np.abs(velocities)[:, None] * steps[None, :]).astype(np.int64)
        offsets *= np.where(velocities < 0, -1, 1)[:, None]
        # velocities that round to the same line score the same: keep the first of each
        _, first = np.unique(offsets, axis=0, return_index=True)
        keep = np.sort(first)
        self._velocities, self._offsets = velocities[keep], offsets[keep]
        self.reset()

    def reset(self) -> None:
        """Forget past queries (after a map reset or a jump back in time)."""
        self._rows: list[np.ndarray | None] = [None] * self.config.length  # ring buffer
        self._pushed = 0

    def push(self, similarity: np.ndarray, eligible: np.ndarray | None = None) -> SequenceScores:
        """Add the current query's similarity row (map keyframes in recorded order); score sequences.

        ``eligible`` (bool per map keyframe, default all): keyframes this query may match
        (mapping mode excludes the recent ones); the others score -inf and stay out of the
        z-score statistics. The whole row is still kept for the queries that follow.
        """
        row = np.asarray(similarity, np.float64).reshape(-1)
        if row.size and not np.isfinite(row).all():
            raise ValueError("similarity row contains NaN or infinite values")
        last = self._rows[(self._pushed - 1) % self.config.length] if self._pushed else None
        if last is not None and row.size < last.size:
            raise ValueError(f"similarity row has {row.size} map keyframes, the previous one had {last.size}: "
                             "the map shrank (reset the matcher when the map is reset)")
        self._rows[self._pushed % self.config.length] = self._normalize(row)
        self._pushed += 1
        result = self._score(row.size)
        if eligible is not None:
            eligible = np.asarray(eligible, bool).reshape(-1)
            if eligible.size != row.size:
                raise ValueError(f"eligible mask has {eligible.size} entries for {row.size} map keyframes")
            result.scores[~eligible] = -np.inf
        if self.config.score_normalization == "zscore":
            _zscore_in_place(result.scores)
        return result

    def _normalize(self, row: np.ndarray) -> np.ndarray:
        if self.config.normalization == "none" or row.size == 0:
            return row
        w = self.config.contrast_window
        # windowed mean/std via cumulative sums: O(N) whatever the window
        c1, c2 = np.r_[0.0, np.cumsum(row)], np.r_[0.0, np.cumsum(row * row)]
        idx = np.arange(row.size)
        lo, hi = np.maximum(idx - w, 0), np.minimum(idx + w + 1, row.size)
        count = hi - lo
        mean = (c1[hi] - c1[lo]) / count
        var = np.maximum((c2[hi] - c2[lo]) / count - mean * mean, 0.0)
        return (row - mean) / np.maximum(np.sqrt(var), MIN_CONTRAST_STD)

    def _score(self, n: int) -> SequenceScores:
        length = min(self._pushed, self.config.length)
        # rows[k] = the row pushed k queries ago
        rows = [self._rows[(self._pushed - 1 - k) % self.config.length] for k in range(length)]
        best = np.full(n, -np.inf)
        best_v = np.full(n, -1, np.int64)
        for v, offsets in enumerate(self._offsets[:, :length]):
            # j must index every row: 0 <= j - o_k < len(row_k) for all k
            lo = max(0, int(offsets.max()))
            hi = min([n] + [len(r) + int(o) for r, o in zip(rows, offsets)])
            if hi <= lo:
                continue
            total = np.zeros(hi - lo)
            for r, o in zip(rows, offsets):
                total += r[lo - o: hi - o]
            total /= length
            better = total > best[lo:hi]
            best[lo:hi][better] = total[better]
            best_v[lo:hi][better] = v
        found = best_v >= 0
        start = np.full(n, -1, np.int64)
        start[found] = np.flatnonzero(found) - self._offsets[best_v[found], length - 1]
        velocity = np.full(n, np.nan)
        velocity[found] = self._velocities[best_v[found]]
        return SequenceScores(best, length, start, velocity)


def _zscore_in_place(scores: np.ndarray) -> None:
    finite = np.isfinite(scores)
    if finite.sum() < 2:  # one candidate (or none): no spread to measure, leave it at 0
        scores[finite] = 0.0
        return
    values = scores[finite]
    std = values.std()
    scores[finite] = (values - values.mean()) / std if std > 0 else 0.0


def similarity_row(query: np.ndarray, db_desc: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """One query against the map: cosine similarity (descriptors L2-normalised) or minus L2 distance."""
    q = np.asarray(query, np.float32).reshape(-1)
    if metric == "cosine":
        return db_desc @ q
    if metric == "euclidean":
        return -np.linalg.norm(db_desc - q[None, :], axis=1)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def sequence_scores(query_desc: np.ndarray, db_desc: np.ndarray, config: SequenceConfig,
                    metric: str = "cosine") -> np.ndarray:
    """(Nq, Nd) sequence scores of queries in recorded order: the online matcher run over them."""
    query_desc, db_desc = _descriptors(query_desc, "query"), _descriptors(db_desc, "database")
    if query_desc.shape[1] != db_desc.shape[1]:
        raise ValueError(f"query descriptors are {query_desc.shape[1]}-d, database {db_desc.shape[1]}-d")
    matcher = SequenceMatcher(config)
    return np.stack([matcher.push(similarity_row(q, db_desc, metric)).scores for q in query_desc]) \
        if len(query_desc) else np.empty((0, len(db_desc)))


def ranked_by_sequence(query_desc: np.ndarray, db_desc: np.ndarray, config: SequenceConfig, k: int,
                       metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` map keyframes per query by sequence score: ``(scores (Nq,k), ids (Nq,k))``, best first.

    Ranked with ``top_k``, as the node ranks, so offline and online lists agree.
    """
    scores = sequence_scores(query_desc, db_desc, config, metric)
    ids = np.array([top_k(row, k) for row in scores], np.int64).reshape(len(scores), min(k, scores.shape[1]))
    top = np.take_along_axis(scores, ids, axis=1)
    ids[np.isneginf(top)] = -1  # no sequence fits there: no result, as DescriptorIndex.search says it
    return top, ids


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, equal scores by lower index: O(N + k log k)."""
    k = min(int(k), len(scores))
    if k <= 0:
        return np.empty(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def sequence_recall(query_desc: np.ndarray, db_desc: np.ndarray, positives: Sequence[np.ndarray],
                    lengths: Sequence[int] = (1, 5, 10, 20), ns: Sequence[int] = (1, 5, 10, 20),
                    config: SequenceConfig | None = None, metric: str = "cosine") -> dict[int, dict[int, float]]:
    """Recall@N per sequence length: ``{L: {N: recall}}`` (for benchmarks: descriptors in, numbers out).

    ``config`` sets everything but the length (default ``SequenceConfig()``); queries
    and database in recorded order; ``positives[q]`` = true-match database indices.
    """
    from structvpr_core.evaluation.metrics import recall_at_n

    base = config or SequenceConfig()
    out = {}
    for length in lengths:
        cfg = SequenceConfig(**{**base.__dict__, "length": int(length)})
        _, ids = ranked_by_sequence(query_desc, db_desc, cfg, max(ns), metric)
        out[int(length)] = recall_at_n(ids, positives, ns).recalls
    return out


def _descriptors(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} descriptors must be a float (N, D) array, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} descriptors contain NaN or infinite values")
    return np.ascontiguousarray(x, np.float32)
