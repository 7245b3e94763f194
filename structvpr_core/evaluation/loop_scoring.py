"""Scoring loop closures the way a SLAM back end lives with them: every query counts.

A run (a replay of a bag, or a mission played through the detector) gives, per query,
the candidates the detector ranked for it (map ids + scores, best first) and the set of
map keyframes that really are the same place (``positives``; empty = the robot is
somewhere new). Then:

- a query whose top candidate is accepted and is a true revisit: true positive;
- a query whose accepted top candidate is not a true revisit, *whether or not the query
  had one*: false positive. A query of a new place that publishes anything is a false
  positive; this is what R@N over matched queries never sees;
- recall = true positives / queries that have a true revisit.

The precision-recall curve sweeps the threshold over the top-1 score of every query
(``metrics.pr_curve``); ``recall@100%P`` is the highest recall with no false positive, the
figure DBoW2 / iBoW-LCD / FILD++ report on single runs. The operating point is what the
run *published* at its own parameters (a query published a loop closure or it did not):
it is measured, not read off the curve, because consistency rules are not thresholds.
Recall@N over the queries that have a revisit is reported beside them, as in retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from structvpr_core.evaluation.metrics import pr_auc, pr_curve, recall_at_100_precision, recall_at_n

RECALL_NS = (1, 5, 10, 20)
WORST_FALSE_POSITIVES = 10


@dataclass
class QueryOutcome:
    """One query's ranked candidates (best first) and, at the run's parameters, what it published."""

    ranked: list[tuple[int, float]]  # (map id, score) the detector ranked, before the final threshold
    published: int | None = None  # map id of the loop closure published (None: nothing published)
    details: dict = field(default_factory=dict)  # e.g. inliers of the top candidate, for the worst-FP list


def score_run(positives: Sequence[np.ndarray], outcomes: Sequence[QueryOutcome | None],
              labels: Sequence[str] | None = None, map_labels: dict[int, str] | None = None) -> dict:
    """Precision/recall of one run. ``outcomes[q]`` None = the query was never answered (a miss).

    ``labels[q]`` names query q (frame, stamp) and ``map_labels[id]`` a map keyframe in the
    worst-false-positive list.
    """
    if len(positives) != len(outcomes):
        raise ValueError(f"{len(positives)} ground-truth rows but {len(outcomes)} query outcomes")
    positives = [np.asarray(p, np.int64).reshape(-1) for p in positives]
    with_revisit = int(sum(len(p) > 0 for p in positives))
    result: dict = {"queries": len(outcomes), "queries_with_revisit": with_revisit,
                    "queries_new_place": len(outcomes) - with_revisit,
                    "unanswered": int(sum(o is None for o in outcomes))}
    result["published"] = _operating_point(positives, outcomes, with_revisit)
    if with_revisit == 0:
        result["error"] = "no query has a true revisit: recall is undefined"
        return result
    width = max([1] + [len(o.ranked) for o in outcomes if o is not None])
    ranked = np.full((len(outcomes), width), -1, np.int64)
    for q, o in enumerate(outcomes):
        if o is not None and o.ranked:
            ranked[q, : len(o.ranked)] = [i for i, _ in o.ranked]
    recalls = recall_at_n(ranked, positives, [n for n in RECALL_NS if n <= width])
    result["recall_at_n"] = {str(n): r for n, r in recalls.recalls.items()}
    top = [(q, o.ranked[0]) for q, o in enumerate(outcomes) if o is not None and o.ranked]
    if not top:
        result.update(pr_auc=0.0, recall_at_100_precision=0.0, threshold_at_100_precision=None, pr_curve=None)
        return result
    scores = np.array([s for _, (_, s) in top], np.float64)
    correct = np.array([i in positives[q] for q, (i, _) in top])
    curve = pr_curve(scores, correct, with_revisit)
    perfect = curve.precision >= 1.0
    result.update(
        pr_auc=pr_auc(curve),
        recall_at_100_precision=recall_at_100_precision(curve),
        # the lowest threshold that still publishes no false positive (None: the best-scored query is wrong)
        threshold_at_100_precision=float(curve.thresholds[perfect][np.argmax(curve.recall[perfect])])
        if perfect.any() else None,
        pr_curve={"precision": curve.precision.tolist(), "recall": curve.recall.tolist(),
                  "thresholds": curve.thresholds.tolist()},
        worst_false_positives=_worst_false_positives(top, correct, positives, outcomes, labels, map_labels),
    )
    return result


def _operating_point(positives: list[np.ndarray], outcomes: Sequence[QueryOutcome | None], with_revisit: int) -> dict:
    published = [(q, o.published) for q, o in enumerate(outcomes) if o is not None and o.published is not None]
    tp = sum(int(i in positives[q]) for q, i in published)
    fp = len(published) - tp
    return {"loop_closures": len(published), "true_positives": tp, "false_positives": fp,
            "false_positives_on_new_places": sum(int(len(positives[q]) == 0) for q, _ in published),
            "precision": tp / len(published) if published else None,
            "recall": tp / with_revisit if with_revisit else None}


def _worst_false_positives(top, correct, positives, outcomes, labels, map_labels) -> list[dict]:
    wrong = [(s, q, i) for (q, (i, s)), ok in zip(top, correct) if not ok]
    wrong.sort(key=lambda t: -t[0])
    out = []
    for s, q, i in wrong[:WORST_FALSE_POSITIVES]:
        row = {"query": q if labels is None else labels[q], "candidate": i if not map_labels else map_labels.get(i, i),
               "score": float(s), "query_has_revisit": bool(len(positives[q])),
               "published": outcomes[q].published is not None}
        row.update(outcomes[q].details)
        out.append(row)
    return out


def summary_line(name: str, result: dict) -> str:
    """One line for a terminal: recall@100%P, PR-AUC, and what the run published."""
    op = result["published"]
    prec = "-" if op["precision"] is None else f"{op['precision']:.3f}"
    rec = "-" if op["recall"] is None else f"{op['recall']:.3f}"
    head = (f"[{name}] {result['queries']} queries ({result['queries_with_revisit']} revisits, "
            f"{result['queries_new_place']} new places)")
    if "error" in result:
        return f"{head}: {result['error']}; published {op['loop_closures']} loop closures ({op['false_positives']} wrong)"
    return (f"{head}: recall@100%P {result['recall_at_100_precision']:.3f}, PR-AUC {result['pr_auc']:.3f}, "
            f"R@1 {result['recall_at_n']['1']:.3f}; published {op['loop_closures']} loop closures: "
            f"precision {prec}, recall {rec} ({op['false_positives']} wrong, "
            f"{op['false_positives_on_new_places']} of them on new places)")
