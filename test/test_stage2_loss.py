"""Stage II loss (Eq. 6) against a batch computed by hand, and phi looked up per (q, p) pair."""

import numpy as np
import pytest
import torch

from structvpr_core.train.stage2 import PairWeights, distillation_loss

# Two triplets; student descriptors are 2-d (dim=2), T(x_D) and the teacher's x_S are 1-d.
# Rows are [x_D | T(x_D)].
EQ = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
EP = torch.tensor([[3.0, 4.0, 2.0], [1.0, 0.0, 0.0]])
EN = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
TEACHER = (torch.tensor([[3.0], [0.0]]), torch.tensor([[2.0], [1.0]]), torch.tensor([[0.0], [2.0]]))
# triplet: row 0 max(|q-p| 5 - |q-n| 1 + 0.1, 0) = 4.1, row 1 max(1 - 0 + 0.1, 0) = 1.1 -> mean 2.6
# squared T(x_D) - x_S over q, p, n: row 0 (1-3)^2 + (2-2)^2 + (0-0)^2 = 4, row 1 0 + (0-1)^2 + (5-2)^2 = 10
TRIPLET = 2.6


@pytest.mark.parametrize("phi, kd", [
    ([1.0, 0.5], (4 * 1.0 + 10 * 0.5) / 2),  # the weight function's arm: per-triplet weights
    ([0.0, 0.0], 0.0),  # phi = 0 (kd none): the plain triplet loss
    ([1.0, 1.0], (4 + 10) / 2),  # phi = 1 (kd all): every pair distilled in full
])
def test_distillation_loss_matches_the_hand_computed_batch(phi, kd):
    total, triplet, kd_loss = distillation_loss(EQ, EP, EN, TEACHER, torch.tensor(phi), dim=2, margin=0.1)
    assert triplet.item() == pytest.approx(TRIPLET, abs=1e-4)
    assert kd_loss.item() == pytest.approx(kd, abs=1e-6)
    assert total.item() == pytest.approx(TRIPLET + kd, abs=1e-4)


def test_phi_is_looked_up_per_pair_not_per_query():
    # query 0 has two positives with different weights: each triplet gets its own pair's phi
    weights = PairWeights(np.array([0, 0, 1]), np.array([5, 6, 7]), np.array([0.2, 0.9, 0.0]))
    assert weights(np.array([0, 0, 1, 0]), np.array([6, 5, 7, 5])).tolist() == pytest.approx([0.9, 0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"\(1, 5\) is not in the partition table"):
        weights(np.array([1]), np.array([5]))
    with pytest.raises(ValueError, match="two weights"):
        PairWeights(np.array([0, 0]), np.array([5, 5]), np.array([0.2, 0.3]))
