"""Training on cached frozen-prefix features computes exactly what the full network computes."""

import numpy as np
import pytest
import torch

from structvpr_core.data.combine import concat_place_sets, every_nth_place, merge_queries
from structvpr_core.data.datasets import gardenspoint, nordland64
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.train.augment import AugmentConfig, augment_batch
from structvpr_core.train.data import make_banks
from structvpr_core.train.evaluation import encode_bank
from structvpr_core.train.frozen_prefix import SuffixNet, feature_banks
from structvpr_core.train.plusplus import PlusPlusConfig, label_aware_student


@pytest.fixture(scope="module")
def small_set(shared):
    ps = nordland64(shared / "data" / "nordland64", "val")
    return every_nth_place(ps, 50)  # 10 places


def test_suffix_on_cached_parts_equals_full_network(small_set, tmp_path):
    torch.manual_seed(0)
    model = RGBBranch(ModelConfig("rgb", (128, 64), trunk="efficientnet-lite0")).eval()
    banks = make_banks(small_set, model.config, None)
    full = encode_bank(model, banks.queries, torch.device("cpu"))
    cached = feature_banks(model, banks, 5, AugmentConfig(views=1), 0, tmp_path)
    suffix = SuffixNet(model, 5)
    np.testing.assert_allclose(encode_bank(suffix, cached.queries, torch.device("cpu")), full, atol=2e-3)
    # the on-disk cache is reused: same key, same tensors
    again = feature_banks(model, banks, 5, AugmentConfig(views=1), 0, tmp_path)
    assert len(list(tmp_path.glob("prefix-*.pt"))) == 2
    assert all(torch.equal(a, b) for a, b in zip(cached.queries.parts, again.queries.parts))
    # augmented views differ from the clean one; only the suffix trains, BN stays frozen
    rng = np.random.default_rng(0)
    aug = cached.queries.batch(np.arange(len(cached.queries)), rng)
    clean = cached.queries.batch(np.arange(len(cached.queries)))
    assert not torch.allclose(aug[-1], clean[-1])
    suffix.train()
    assert all(not m.training for m in suffix.modules() if isinstance(m, torch.nn.BatchNorm2d))
    trainable = {id(p) for p in suffix.trainable_parameters()}
    assert trainable == {id(p) for p in model.stages[4].parameters()}


def test_label_aware_suffix_equals_full_network(small_set, tmp_path):
    # StructVPR++ student: its label head average-pools the MC levels too, so a level cached
    # below the start stage must give back its mean as well as its max
    torch.manual_seed(0)
    plain = RGBBranch(ModelConfig("rgb", (128, 64), trunk="efficientnet-lite0"))
    model = label_aware_student(plain, LabelFeatureConfig(num_labels=6, label_dim=8),
                                PlusPlusConfig(student_hidden=16)).eval()
    banks = make_banks(small_set, model.config, None)
    cached = feature_banks(model, banks, 5, AugmentConfig(views=0), 0, tmp_path)
    suffix = SuffixNet(model, 5).eval()
    np.testing.assert_allclose(encode_bank(suffix, cached.queries, torch.device("cpu")),
                               encode_bank(model, banks.queries, torch.device("cpu")), atol=2e-3)
    parts = cached.queries.batch(np.arange(4))
    x = banks.queries.batch(np.arange(4))
    with torch.no_grad():
        for got, want in zip(suffix.forward_parts(parts), model.forward_parts(x)):
            torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    trainable = {id(p) for p in suffix.trainable_parameters()}
    assert trainable == {id(p) for m in (model.stages[4], model.label_head) for p in m.parameters()}


def test_augment_changes_images_reproducibly():
    x = torch.rand(4, 3, 32, 64)
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, x) and a.min() >= 0 and a.max() <= 1
    identity = AugmentConfig(brightness=0, contrast=0, saturation=0, gamma=0, tint=0, crop=0, grey_p=0)
    assert torch.allclose(augment_batch(x, identity, torch.Generator()), x, atol=1e-6)


def test_place_set_combination_keeps_ground_truth(shared):
    a = every_nth_place(nordland64(shared / "data" / "nordland64", "val"), 25)
    left = gardenspoint(shared / "data" / "gardenspoint", "val", "day_right", "day_left")
    night = gardenspoint(shared / "data" / "gardenspoint", "val", "day_right", "night_right")
    gp = merge_queries([left, night], "gp")
    assert len(gp.database) == len(left.database) and len(gp.queries) == 2 * len(left.queries)
    both = concat_place_sets([a, gp], "both")
    for q in range(len(both.queries)):
        for pos in both.positives[q]:  # a positive is the same place id in the same source
            assert both.q_meta["source"][q] == both.db_meta["source"][pos]
            assert abs(both.q_meta["place_id"][q] - both.db_meta["place_id"][pos]) <= (10 if q < len(a.queries) else 2)
    assert both.positives[len(a.queries)][0] >= len(a.database)  # offsets applied
    with pytest.raises(ValueError, match="do not share one database"):
        merge_queries([a, left], "x")
