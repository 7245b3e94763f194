"""Single-image retrieval re-ranked by local-feature verification: R@1 before and after.

For every query of a place set: the global descriptor's top ``k`` database images, each
verified against the query (``geometry.verify``, the node's verification), then reordered
by inliers (``rerank.rerank_order``: most inliers first, ties keep the global order). R@1 of
the reordered list is what the node's top candidate is worth with verification on. Images
that cannot be verified (under ``min_image_pixels`` or ``min_keypoints``, e.g. nordland64's
64x32 frames) keep the global order, so there re-ranked R@1 = global R@1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from structvpr_core.data.datasets import PlaceSet
from structvpr_core.evaluation.evaluate import retrieve
from structvpr_core.loop_closure.geometry import GeometryConfig, LocalFeatures, verify
from structvpr_core.loop_closure.rerank import rerank_order


def reranked_recall_at_1(place_sets: list[PlaceSet], desc: dict[Path, np.ndarray],
                         features: dict[Path, LocalFeatures], geometry: GeometryConfig, k: int = 5,
                         inliers_cache: dict | None = None) -> dict:
    """Soft R@1 of the global ranking and of its top ``k`` re-ranked by inliers, pooled over the place sets.

    ``inliers_cache`` ((query, database) path pair -> inliers) is shared between models: their top-k
    lists overlap, and a pair's verification does not depend on the model.
    """
    cache = {} if inliers_cache is None else inliers_cache
    hits_global = hits_reranked = evaluated = 0
    for ps in place_sets:
        db = np.stack([desc[p] for p in ps.database])
        q = np.stack([desc[p] for p in ps.queries])
        scores, ranked, _ = retrieve(q, db, min(k, len(ps.database)))
        for qi, positives in enumerate(ps.positives):
            if positives.size == 0:
                continue
            evaluated += 1
            top = ranked[qi]
            inliers = []
            for di in top:
                pair = (ps.queries[qi], ps.database[di])
                if pair not in cache:
                    cache[pair] = verify(features[pair[0]], features[pair[1]], geometry).inliers
                inliers.append(cache[pair])
            order = rerank_order(scores[qi], inliers)
            hits_global += int(top[0] in positives)
            hits_reranked += int(top[order[0]] in positives)
    return {"k": k, "num_evaluated": evaluated, "recall@1_global": hits_global / max(evaluated, 1),
            "recall@1_reranked": hits_reranked / max(evaluated, 1)}
