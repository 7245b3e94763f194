"""Place-recognition metrics (pure numpy) and their plots.

- Recall@N: a query counts as correct if any of its top N retrieved database items
  is a true match. Queries with no true match in the database cannot be correct
  at any N and are left out (and counted, so the report says how many).
- Precision-recall over the top-1 score threshold (loop-closure view): a query is
  *accepted* when its top-1 score is >= the threshold. precision = correct accepted /
  accepted; recall = correct accepted / number of queries that have a true match.
  Queries without a true match still count when accepted (as false positives).
- Ties: queries whose top-1 scores are equal are accepted or rejected together
  (a threshold cannot separate them), so the curve has one point per distinct
  score and does not depend on the input order.
- AUC = average precision, step-wise (no interpolation):
  AP = sum_i (R_i - R_{i-1}) * P_i over the curve points with R_0 = 0; the same
  definition as sklearn's ``average_precision_score``. It equals the area under
  the PR step curve up to the highest recall reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from structvpr_core.io_utils import atomic_write


@dataclass
class RecallAtN:
    recalls: dict[int, float]  # N -> fraction of evaluated queries correct within the top N
    num_evaluated: int  # queries with at least one true match
    num_skipped: int  # queries without any true match (not in the denominator)
    # (num_evaluated,) 0-based rank of each evaluated query's first true match; K when none retrieved
    first_hit_ranks: np.ndarray


@dataclass
class PRCurve:
    precision: np.ndarray  # (T,) one point per distinct top-1 score, thresholds descending
    recall: np.ndarray  # (T,)
    thresholds: np.ndarray  # (T,) accept a query when its top-1 score >= threshold


def recall_at_n(ranked_ids: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = (1, 5, 10, 20)) -> RecallAtN:
    """``ranked_ids`` (Q, K) best first (-1 = no result); ``positives[q]`` = true-match ids of query q."""
    ranked_ids = np.asarray(ranked_ids)
    if ranked_ids.ndim != 2:
        raise ValueError(f"ranked_ids must be (Q, K), got shape {ranked_ids.shape}")
    if len(positives) != len(ranked_ids):
        raise ValueError(f"{len(ranked_ids)} ranked lists but {len(positives)} positive sets")
    ns = sorted(int(n) for n in ns)
    if not ns or ns[0] < 1 or ns[-1] > ranked_ids.shape[1]:
        raise ValueError(f"N values {ns} must be in 1..{ranked_ids.shape[1]} (the retrieved list length)")
    # rank (0-based) of the first true match per query; K when none retrieved
    first_hit = np.full(len(ranked_ids), ranked_ids.shape[1])
    has_match = np.zeros(len(ranked_ids), bool)
    for q, pos in enumerate(positives):
        pos = np.asarray(pos).reshape(-1)
        if pos.size == 0:
            continue
        has_match[q] = True
        hits = np.flatnonzero(np.isin(ranked_ids[q], pos))
        if hits.size:
            first_hit[q] = hits[0]
    num_evaluated = int(has_match.sum())
    if num_evaluated == 0:
        raise ValueError("no query has a true match in the database: recall is undefined")
    recalls = {n: float((first_hit[has_match] < n).mean()) for n in ns}
    return RecallAtN(recalls, num_evaluated, len(ranked_ids) - num_evaluated, first_hit[has_match])


def pr_curve(top1_scores: np.ndarray, top1_correct: np.ndarray, num_with_match: int) -> PRCurve:
    """Precision/recall at every distinct top-1 score threshold (see module doc for ties)."""
    scores = np.asarray(top1_scores, dtype=np.float64).reshape(-1)
    correct = np.asarray(top1_correct, dtype=bool).reshape(-1)
    if scores.shape != correct.shape:
        raise ValueError(f"{scores.size} scores but {correct.size} correctness flags")
    if scores.size == 0:
        raise ValueError("no queries: cannot compute a precision-recall curve")
    if not np.isfinite(scores).all():
        raise ValueError("top-1 scores contain NaN/inf (a query with no retrieved result?)")
    if num_with_match < 1:
        raise ValueError("num_with_match must be >= 1: recall is undefined when no query has a true match")
    if correct.sum() > num_with_match:
        raise ValueError(f"{int(correct.sum())} correct top-1 results but only {num_with_match} queries have a match")
    order = np.argsort(-scores, kind="stable")
    scores, correct = scores[order], correct[order]
    tp = np.cumsum(correct)
    accepted = np.arange(1, scores.size + 1)
    # keep the last index of each run of equal scores: tied queries are accepted together
    last_of_group = np.r_[scores[1:] != scores[:-1], True]
    tp, accepted = tp[last_of_group], accepted[last_of_group]
    return PRCurve(tp / accepted, tp / num_with_match, scores[last_of_group])


def pr_auc(curve: PRCurve) -> float:
    """Average precision (step-wise, see module doc)."""
    recall_steps = np.diff(np.r_[0.0, curve.recall])
    return float(np.sum(recall_steps * curve.precision))


def recall_at_100_precision(curve: PRCurve) -> float:
    """Highest recall reachable with no false positive accepted (0 if the best-scored query is wrong)."""
    perfect = curve.precision >= 1.0
    return float(curve.recall[perfect].max()) if perfect.any() else 0.0


def plot_pr(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "Precision-recall") -> Path:
    """``curves``: name -> (precision, recall). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    for name, (precision, recall) in curves.items():
        # step curve with the (0, first precision) start, as AP integrates it
        r = np.r_[0.0, np.asarray(recall)]
        p = np.r_[np.asarray(precision)[:1], np.asarray(precision)]
        ax.step(r, p, where="pre", label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)


def _save_png(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
