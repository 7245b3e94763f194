"""Recall@N and precision-recall metrics on tiny hand-computed examples."""

import numpy as np
import pytest

from structvpr_core.evaluation.metrics import (
    PRCurve,
    plot_pr,
    pr_auc,
    pr_curve,
    recall_at_100_precision,
    recall_at_n,
)


def pos(*ids):
    return np.array(ids, np.int64)


def test_recall_at_n_hand_computed_with_skipped_query():
    ranked = np.array([[3, 1, 2], [0, 2, 1], [5, 6, 7], [1, 0, -1]])
    positives = [pos(1), pos(1, 7), pos(), pos(9)]
    # q0: first hit at rank 2; q1: rank 3; q2: no positive -> skipped; q3: never found
    result = recall_at_n(ranked, positives, ns=(1, 2, 3))
    assert result.recalls == pytest.approx({1: 0.0, 2: 1 / 3, 3: 2 / 3})
    assert (result.num_evaluated, result.num_skipped) == (3, 1)


def test_recall_at_n_is_monotone_and_counts_any_positive():
    ranked = np.array([[4, 5, 6, 7], [9, 8, 7, 6]])
    result = recall_at_n(ranked, [pos(5, 6, 7), pos(9)], ns=(1, 2, 4))
    assert result.recalls == {1: 0.5, 2: 1.0, 4: 1.0}


def test_recall_at_n_errors():
    ranked = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"must be in 1\.\.3"):
        recall_at_n(ranked, [pos(0), pos(0)], ns=(1, 5))
    with pytest.raises(ValueError, match="2 ranked lists but 1 positive"):
        recall_at_n(ranked, [pos(0)], ns=(1,))
    with pytest.raises(ValueError, match="no query has a true match"):
        recall_at_n(ranked, [pos(), pos()], ns=(1,))


def test_pr_curve_hand_computed_with_tie():
    scores = [0.9, 0.8, 0.8, 0.5, 0.3]
    correct = [True, False, True, True, False]
    curve = pr_curve(scores, correct, num_with_match=4)  # one matched query's top-1 is wrong
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.5, 0.3])
    np.testing.assert_allclose(curve.precision, [1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 4, 2 / 4, 3 / 4, 3 / 4])
    # AP = 0.25 * 1 + 0.25 * 2/3 + 0.25 * 3/4 + 0 * 3/5
    assert pr_auc(curve) == pytest.approx(0.25 + 1 / 6 + 0.1875)
    assert recall_at_100_precision(curve) == pytest.approx(0.25)


def test_tied_scores_are_accepted_together_whatever_the_order():
    # two queries tie at the top, one right and one wrong: no threshold gives 100% precision
    for order in ([0, 1, 2], [1, 0, 2]):
        scores = np.array([0.9, 0.9, 0.1])[order]
        correct = np.array([True, False, True])[order]
        curve = pr_curve(scores, correct, num_with_match=2)
        np.testing.assert_allclose(curve.precision, [0.5, 2 / 3])
        np.testing.assert_allclose(curve.recall, [0.5, 1.0])
        assert recall_at_100_precision(curve) == 0.0
        assert pr_auc(curve) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_all_correct_and_none_correct():
    all_right = pr_curve([0.9, 0.7, 0.4], [True, True, True], num_with_match=3)
    assert pr_auc(all_right) == pytest.approx(1.0)
    assert recall_at_100_precision(all_right) == pytest.approx(1.0)

    none_right = pr_curve([0.9, 0.7, 0.4], [False, False, False], num_with_match=3)
    np.testing.assert_array_equal(none_right.precision, [0, 0, 0])
    assert pr_auc(none_right) == 0.0 and recall_at_100_precision(none_right) == 0.0


def test_queries_without_match_count_as_false_positives_when_accepted():
    # query 1 has no true match in the database; its (wrong) top-1 scores highest
    curve = pr_curve([0.6, 0.95, 0.5], [True, False, True], num_with_match=2)
    np.testing.assert_allclose(curve.precision, [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(curve.recall, [0.0, 0.5, 1.0])
    assert recall_at_100_precision(curve) == 0.0
    assert pr_auc(curve) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_pr_curve_errors():
    with pytest.raises(ValueError, match="num_with_match must be >= 1"):
        pr_curve([0.5], [False], num_with_match=0)
    with pytest.raises(ValueError, match="NaN/inf"):
        pr_curve([0.5, -np.inf], [True, False], num_with_match=1)
    with pytest.raises(ValueError, match="2 scores but 1"):
        pr_curve([0.5, 0.4], [True], num_with_match=1)
    with pytest.raises(ValueError, match="only 1 queries have a match"):
        pr_curve([0.5, 0.4], [True, True], num_with_match=1)


def test_plots_write_png_files(tmp_path):
    curve = pr_curve([0.9, 0.8, 0.8, 0.5], [True, False, True, True], num_with_match=4)
    assert isinstance(curve, PRCurve)
    pr_png = plot_pr({"model": (curve.precision, curve.recall)}, tmp_path / "plots" / "pr.png")
    data = pr_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["plots", "pr.png"]  # no temp leftovers
