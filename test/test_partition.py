"""Group partition and weight functions (paper Eq. 4, Eq. 7) against hand-computed values,
and positive ranks on real nordland64 images."""

import math

import numpy as np
import pytest

from structvpr_core.data.datasets import nordland64
from structvpr_core.runtime.encoder import RawPixelEncoder
from structvpr_core.data.images import read_rgb
from structvpr_core.train.data import first_places
from structvpr_core.train.partition import (group_partition, group_ratios, positive_ranks, read_table,
                                            weight_fn)

LN = math.log


def phi(x, y, **kw):
    w, _ = weight_fn(np.array([x]), np.array([y]), **kw)
    return float(w[0])


@pytest.mark.parametrize("x, y, expected", [
    # D1: x <= Nt < y  -> 1 + (min(Nm, y) - x) / (4 ln(1 + x))
    (1, 15, 1 + 14 / (4 * LN(2))),          # x = 1: ln 2 = 0.693 in the denominator -> 6.0494
    (2, 50, 1 + (20 - 2) / (4 * LN(3))),    # y capped at Nm = 20 -> 5.0960
    (2, 20, 1 + (20 - 2) / (4 * LN(3))),    # y = Nm: the cap does not change anything
    (10, 11, 1 + 1 / (4 * LN(11))),         # boundary x = Nt, y = Nt + 1 -> 1.1043
    # D2: x <= y <= Nt -> 1 + (y - x) / (5 ln(1 + x))
    (1, 1, 1.0),
    (3, 10, 1 + 7 / (5 * LN(4))),           # boundary y = Nt stays in D2 -> 2.0099
    (10, 10, 1.0),                          # x = y = Nt
    # D3: y < x <= Nt -> 1 + (y - x) / (4 ln(1 + x))  (below 1)
    (5, 2, 1 - 3 / (4 * LN(6))),            # 0.5814
    (10, 1, 1 - 9 / (4 * LN(11))),          # the minimum for Nt = 10: 0.0617
    # D4: x > Nt -> 0 whatever y
    (11, 1, 0.0),
    (11, 30, 0.0),
])
def test_phi_gp_d_hand_computed(x, y, expected):
    assert phi(x, y, nt=10, nm=20) == pytest.approx(expected, rel=1e-12)


def test_phi_hand_values_spelled_out():
    # the same numbers written out, so a wrong formula cannot hide behind the same expression
    assert phi(1, 15) == pytest.approx(6.04943, abs=1e-5)
    assert phi(2, 50) == pytest.approx(5.09607, abs=1e-5)
    assert phi(10, 1) == pytest.approx(0.06168, abs=1e-5)
    assert phi(1, 1, grouping="gp-s") == pytest.approx(1.36067, abs=1e-5)


def test_phi_d3_minimum_over_all_pairs_is_positive_for_nt_10_and_clipped_beyond():
    x, y = np.meshgrid(np.arange(1, 11), np.arange(1, 11))
    w, clipped = weight_fn(x.ravel(), y.ravel(), nt=10, nm=20)
    assert clipped == 0 and w.min() == pytest.approx(1 - 9 / (4 * LN(11)))
    # Nt = 11: x = 11, y = 1 gives 1 - 10 / (4 ln 12) = -0.006 -> clipped to 0 and counted
    w, clipped = weight_fn(np.array([11, 11]), np.array([1, 2]), nt=11, nm=20)
    assert clipped == 1 and w[0] == 0.0 and w[1] == pytest.approx(1 - 9 / (4 * LN(12)))


def test_phi_gp_s_eq7():
    assert phi(1, 99, grouping="gp-s") == pytest.approx(1 + 1 / (4 * LN(2)))
    assert phi(10, 1, grouping="gp-s") == pytest.approx(1 + 1 / (4 * LN(11)))
    assert phi(11, 1, grouping="gp-s") == 0.0


def test_groups_boundaries_and_variants():
    x = np.array([1, 10, 10, 3, 10, 11, 11])
    y = np.array([11, 11, 10, 10, 9, 1, 40])
    assert group_partition(x, y, 10, "gp-d").tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert group_partition(x, y, 10, "gp-s").tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert group_partition(x, y, 10, "gp-r").tolist() == [1, 1, 0, 0, 0, 0, 1]
    ratios = group_ratios(x, y, 10)
    assert ratios["D1"] == pytest.approx(2 / 7) and ratios["D4"] == pytest.approx(2 / 7)
    assert ratios["S1"] + ratios["S2"] == pytest.approx(1.0)


def test_constant_all_none_schemes():
    x, y = np.array([1, 2, 5, 12]), np.array([15, 4, 3, 1])  # D1, D2, D3, D4
    assert weight_fn(x, y, weights="constant", constant=[8, 4, 1, 0])[0].tolist() == [8, 4, 1, 0]
    assert weight_fn(x, y, grouping="gp-s", weights="constant", constant=[1, 0])[0].tolist() == [1, 1, 1, 0]
    assert weight_fn(x, y, weights="all")[0].tolist() == [1, 1, 1, 1]
    assert weight_fn(x, y, weights="none")[0].tolist() == [0, 0, 0, 0]


def test_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="1-based"):
        weight_fn(np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match="same shape"):
        group_partition(np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="gp-d"):
        weight_fn(np.array([1]), np.array([1]), grouping="gp-r", weights="phi")


def test_rank_hand_example():
    q = np.array([[1.0, 0.0]])
    db = np.array([[0.9, 0.436], [1.0, 0.0], [0.5, 0.866], [0.99, 0.141], [0.0, 1.0]])
    # sims to q: 0.9, 1.0, 0.5, 0.99, 0.0; p = 2; 0, 1, 3 are more similar but 3 is also a
    # true match of q, so it does not push p down: rank 3
    assert positive_ranks(q, db, np.array([0]), np.array([2]), [np.array([2, 3])]).tolist() == [3]
    assert positive_ranks(q, db, np.array([0]), np.array([1]), [np.array([1])]).tolist() == [1]


def test_ranks_on_real_nordland_images(shared):
    ps = first_places(nordland64(shared / "data" / "nordland64", "train"), 40)
    enc = RawPixelEncoder()
    q = enc.encode([read_rgb(p) for p in ps.queries])
    db = enc.encode([read_rgb(p) for p in ps.database])
    pairs_q = np.arange(40)
    pairs_p = np.asarray([hp[0] for hp in ps.hard_positives])
    ranks = positive_ranks(q, db, pairs_q, pairs_p, ps.positives)
    for i in pairs_q:  # independent check: position of p in the full sorted list, other positives removed
        order = [j for j in np.argsort(-(db @ q[i]), kind="stable") if j == pairs_p[i] or j not in ps.positives[i]]
        assert ranks[i] == order.index(pairs_p[i]) + 1
    assert ranks.min() >= 1 and ranks.max() <= 40 - 1
    # winter -> summer on raw pixels is hard but far from random: some exact frames rank first
    assert (ranks == 1).sum() >= 2


def test_read_table_errors(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("q,p,x\n1,2,3\n")
    with pytest.raises(ValueError, match="missing column"):
        read_table(bad)
    with pytest.raises(FileNotFoundError, match="partition"):
        read_table(tmp_path / "nope.csv")
