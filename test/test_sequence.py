"""Sequence matcher (structvpr_core.retrieval.sequence) on real nordland64 descriptors."""

import numpy as np
import pytest

from structvpr_core.config import ConfigError
from structvpr_core.data.datasets import nordland64
from structvpr_core.evaluation.metrics import recall_at_n
from structvpr_core.retrieval.sequence import (SequenceConfig, SequenceMatcher, ranked_by_sequence, sequence_recall,
                                               sequence_scores, similarity_row)
from structvpr_core.runtime.encoder import encode_paths, load_encoder

RAW_PIXEL = dict(normalization="local_contrast")  # the measured choice for raw pixels (docs/sequence.md)


@pytest.fixture(scope="module")
def nordland_test(shared):
    place_set = nordland64(shared / "data" / "nordland64", "test")
    encoder = load_encoder("raw-pixel")
    return (encode_paths(encoder, place_set.queries, 128), encode_paths(encoder, place_set.database, 128),
            place_set.positives)


def test_sequences_lift_raw_pixel_recall_on_nordland64_test(nordland_test):
    queries, database, positives = nordland_test
    recalls = sequence_recall(queries, database, positives, lengths=(1, 10, 20), ns=(1,),
                              config=SequenceConfig(**RAW_PIXEL))
    r1 = {length: r[1] for length, r in recalls.items()}
    # single frame ~0.09-0.16 whatever the descriptor; sequences of 10 / 20 winter frames
    # retracing the summer map measured 0.70 / 0.86
    assert r1[1] < 0.25
    assert r1[10] > 0.6 and r1[10] > r1[1] + 0.4
    assert r1[20] > 0.8


def _reference_scores(rows, lengths_at_push, cfg):
    """The definition, loop by loop: best mean over velocities of S[t-k, j -+ round(|v| k)], all terms inside."""
    t = len(rows) - 1
    length = min(len(rows), cfg.length)
    n = len(rows[-1])
    best = np.full(n, -np.inf)
    for v in cfg.velocities():
        for j in range(n):
            terms = []
            for k in range(length):
                i = j - int(np.rint(abs(v) * k)) * (1 if v >= 0 else -1)
                if not 0 <= i < lengths_at_push[t - k]:
                    break
                terms.append(rows[t - k][i])
            else:
                best[j] = max(best[j], float(np.mean(np.array(terms, np.float64))))
    return best


def test_incremental_matcher_equals_the_definition_on_a_growing_map(nordland_test):
    """Mapping mode: each query sees the map as it was; reverse lines and short starts included."""
    queries, database, _ = nordland_test
    cfg = SequenceConfig(length=4, min_velocity=0.5, max_velocity=1.5, velocity_steps=3, reverse=True,
                         score_normalization="none")
    matcher = SequenceMatcher(cfg)
    rows, sizes = [], []
    for t in range(12):
        size = 20 + t  # the map grows by one keyframe per query
        row = similarity_row(queries[100 + t], database[:size])
        rows.append(row)
        sizes.append(size)
        got = matcher.push(row)
        np.testing.assert_allclose(got.scores, _reference_scores(rows, sizes, cfg), rtol=1e-12)
        assert got.length == min(t + 1, cfg.length)


def test_span_says_where_the_sequence_starts(nordland_test):
    queries, database, positives = nordland_test
    matcher = SequenceMatcher(SequenceConfig(length=10, min_velocity=1, max_velocity=1, velocity_steps=1, **RAW_PIXEL))
    for q in queries[:300]:
        result = matcher.push(similarity_row(q, database))
    best = int(np.argmax(result.scores))
    assert best in positives[299]
    assert result.start_ids[best] == best - 9 and result.velocities[best] == 1.0


def test_reverse_traversal_needs_reverse(nordland_test):
    queries, database, positives = nordland_test
    backwards = database[::-1].copy()  # the map recorded driving the other way
    flipped = [len(database) - 1 - p for p in positives]
    for reverse, expected in ((False, lambda r: r < 0.3), (True, lambda r: r > 0.6)):
        _, ids = ranked_by_sequence(queries, backwards, SequenceConfig(length=10, reverse=reverse, **RAW_PIXEL), 1)
        assert expected(recall_at_n(ids, flipped, (1,)).recalls[1]), reverse


def test_first_queries_answer_with_shorter_sequences(nordland_test):
    queries, database, _ = nordland_test
    scores = sequence_scores(queries[:3], database, SequenceConfig(length=10))
    assert np.isfinite(scores.max(axis=1)).all()
    # zscore: every query's eligible scores have mean 0, std 1
    finite = scores[2][np.isfinite(scores[2])]
    assert abs(finite.mean()) < 1e-9 and abs(finite.std() - 1) < 1e-9


def test_eligible_mask_excludes_keyframes(nordland_test):
    queries, database, _ = nordland_test
    matcher = SequenceMatcher(SequenceConfig(length=3))
    eligible = np.arange(len(database)) < 100
    for q in queries[:3]:
        result = matcher.push(similarity_row(q, database), eligible)
    assert np.isneginf(result.scores[100:]).all() and np.isfinite(result.scores[:100]).any()


def test_euclidean_metric_ranks_like_cosine_for_unit_descriptors(nordland_test):
    queries, database, _ = nordland_test
    cfg = SequenceConfig(length=5, score_normalization="none")
    _, by_cosine = ranked_by_sequence(queries[:50], database, cfg, 5)
    _, by_distance = ranked_by_sequence(queries[:50], database, cfg, 5, metric="euclidean")
    # mean of -||a-b|| is not a monotone map of the mean cosine, so the lists may differ slightly
    assert np.mean(by_cosine[:, 0] == by_distance[:, 0]) > 0.9


@pytest.mark.parametrize("kwargs, message", [
    (dict(length=0), "sequence length must be in 1..1000, got 0"),
    (dict(length=100_000_000), "sequence length must be in 1..1000, got 100000000"),
    (dict(velocity_steps=10**9), "velocity_steps must be in 1..100"),
    (dict(min_velocity=2, max_velocity=1), "min_velocity <= max_velocity"),
    (dict(velocity_steps=1), "velocity_steps 1 needs"),
    (dict(normalization="seqslam"), "normalization must be one of"),
    (dict(score_normalization="max"), "score_normalization must be one of"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SequenceConfig(**kwargs)


def test_bad_input_is_refused(nordland_test):
    queries, database, _ = nordland_test
    matcher = SequenceMatcher(SequenceConfig(length=3))
    matcher.push(similarity_row(queries[0], database))
    with pytest.raises(ValueError, match="the map shrank"):
        matcher.push(similarity_row(queries[1], database[:10]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        matcher.push(np.full(len(database), np.nan))
    with pytest.raises(ValueError, match="query descriptors are 2048-d, database 10-d"):
        sequence_scores(queries, database[:, :10], SequenceConfig())
    with pytest.raises(ValueError, match="metric must be one of"):
        similarity_row(queries[0], database, "manhattan")
