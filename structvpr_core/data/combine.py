"""Place-set algebra for training on several data sets at once.

``concat_place_sets`` puts independent sets side by side (indices offset, so a query's
ground truth still points into its own set's images; images of different sets are
different places, hence valid negatives). ``merge_queries`` joins sets that share one
database (e.g. day_left and night_right queries against day_right), so the database
is not duplicated: a duplicated image would be a "negative" identical to a positive.
``subset_places`` keeps chosen images and remaps the ground truth.
"""

from __future__ import annotations

import numpy as np

from structvpr_core.data.datasets import PlaceSet

GT_FIELDS = ("positives", "hard_positives", "non_negatives")


def subset_places(ps: PlaceSet, db_keep: np.ndarray, q_keep: np.ndarray, name: str) -> PlaceSet:
    """Keep database images ``db_keep`` and queries ``q_keep`` (sorted indices); ground truth remapped."""
    db_keep, q_keep = np.asarray(db_keep, np.int64), np.asarray(q_keep, np.int64)
    new_index = np.full(len(ps.database), -1, np.int64)
    new_index[db_keep] = np.arange(len(db_keep))

    def remap(lists):
        out = []
        for q in q_keep:
            mapped = new_index[lists[q]]
            out.append(mapped[mapped >= 0])
        return out

    return PlaceSet(
        name=name, database=[ps.database[i] for i in db_keep], queries=[ps.queries[i] for i in q_keep],
        **{f: remap(getattr(ps, f)) for f in GT_FIELDS},
        db_meta={k: v[db_keep] for k, v in ps.db_meta.items()}, q_meta={k: v[q_keep] for k, v in ps.q_meta.items()},
    )


def every_nth_place(ps: PlaceSet, n: int) -> PlaceSet:
    """Every n-th database image and query (thins a long, densely sampled route)."""
    if n == 1:
        return ps
    return subset_places(ps, np.arange(0, len(ps.database), n), np.arange(0, len(ps.queries), n),
                         f"{ps.name}[::{n}]")


def _common_meta(sets: list[PlaceSet], side: str) -> list[str]:
    keys = set(getattr(sets[0], side))
    for s in sets[1:]:
        keys &= set(getattr(s, side))
    return sorted(keys)


def concat_place_sets(sets: list[PlaceSet], name: str) -> PlaceSet:
    """Independent sets side by side; metadata kept where every set has it, plus a ``source`` column."""
    if not sets:
        raise ValueError("concat_place_sets needs at least one place set")
    offsets = np.cumsum([0] + [len(s.database) for s in sets[:-1]])
    gt = {f: [lst + off for s, off in zip(sets, offsets) for lst in getattr(s, f)] for f in GT_FIELDS}
    meta = {}
    for side, images in (("db_meta", "database"), ("q_meta", "queries")):
        meta[side] = {k: np.concatenate([getattr(s, side)[k] for s in sets]) for k in _common_meta(sets, side)}
        meta[side]["source"] = np.concatenate([np.full(len(getattr(s, images)), i, np.int64)
                                               for i, s in enumerate(sets)])
    return PlaceSet(name=name, database=[p for s in sets for p in s.database],
                    queries=[p for s in sets for p in s.queries], **gt, **meta)


def merge_queries(sets: list[PlaceSet], name: str) -> PlaceSet:
    """Sets with the same database: one set whose queries are all of theirs."""
    database = sets[0].database
    if any(s.database != database for s in sets[1:]):
        raise ValueError(f"merge_queries: {[s.name for s in sets]} do not share one database")
    return PlaceSet(
        name=name, database=list(database), queries=[p for s in sets for p in s.queries],
        **{f: [lst for s in sets for lst in getattr(s, f)] for f in GT_FIELDS},
        db_meta=dict(sets[0].db_meta),
        q_meta={k: np.concatenate([s.q_meta[k] for s in sets]) for k in _common_meta(sets, "q_meta")},
    )
