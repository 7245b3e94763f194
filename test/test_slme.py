import numpy as np
import pytest
import torch
from PIL import Image

from structvpr_core.config import ConfigError
from structvpr_core.segmentation.slme import CLUSTERS_6, SLME, SLMEConfig, load_table, multilevel_masks


@pytest.mark.parametrize("label_set,n", [("ade20k", 150), ("cityscapes", 19), ("camvid", 11)])
def test_every_class_has_exactly_one_cluster(label_set, n):
    table = load_table(label_set)
    assert table.num_classes == n
    assert all(0 <= c < 6 for c in table.cluster_of_class)
    # every cluster is used by every real label set (a table that drops "sky" is a bug)
    assert set(table.cluster_of_class) == set(range(6))


def test_known_class_assignments():
    ade = load_table("ade20k")
    def cluster(table, name):
        return CLUSTERS_6[table.cluster_of_class[table.classes.index(name)]]
    assert cluster(ade, "tree") == "vegetation"
    assert cluster(ade, "car") == "dynamic"
    assert cluster(ade, "sky") == "sky"
    assert cluster(ade, "road") == "ground"
    assert cluster(ade, "building") == "buildings"
    assert cluster(ade, "lamp") == "other"  # wildcard
    assert cluster(load_table("cityscapes"), "rider") == "dynamic"
    assert cluster(load_table("camvid"), "pavement") == "ground"


def test_paper_weights_on_real_camvid_labels(shared):
    labels = np.array(Image.open(shared / "data/camvid_sample/labels/0001TP_008550.png"))
    enc = SLME(SLMEConfig(label_set="camvid"))(labels)
    assert enc.shape == (6, *labels.shape)
    # each labelled pixel has exactly one non-zero channel holding its cluster's prior weight
    nonzero = (enc > 0).sum(0)
    assert torch.equal(nonzero, torch.from_numpy((labels != 11).astype(np.int64)))
    table = load_table("camvid")
    w = np.array([0.5, 0.5, 1, 1, 2, 2], np.float32)
    expected = np.where(labels != 11, w[np.array(table.cluster_of_class + (0,))[labels]], 0)
    assert np.allclose(enc.sum(0).numpy(), expected)
    # sky pixels (class 0) are in channel 2 with weight 1
    sky = labels == 0
    assert sky.any() and torch.all(enc[2][torch.from_numpy(sky)] == 1.0)


def test_variants():
    labels = np.array([[0, 1, 8], [3, 5, 11]], np.uint8)  # camvid: sky building car / road tree void
    rev = SLME(SLMEConfig(label_set="camvid", weighting="reversed"))(labels)
    assert rev[4, 0, 1] == 0.5 and rev[0, 1, 1] == 2.0  # buildings 2 -> 0.5, vegetation 0.5 -> 2
    flat = SLME(SLMEConfig(label_set="camvid", weighting="unweighted"))(labels)
    assert flat.sum() == 5
    c3 = SLME(SLMEConfig(label_set="camvid", scheme="c3"))(labels)
    assert c3.shape[0] == 3
    assert c3[0, 0, 0] == 1.0 and c3[0, 1, 0] == 1.0  # sky, road -> sky&ground
    assert c3[1, 0, 2] == 0.5  # car -> dynamic
    assert c3[2, 0, 1] == 2.0 and c3[2, 1, 1] == 2.0  # building, tree -> static
    raw = SLME(SLMEConfig(label_set="ade20k", scheme="raw", weighting="unweighted"))(
        np.array([[0, 149, 255]], np.uint8)
    )
    assert raw.shape == (150, 1, 3) and raw[0, 0, 0] == 1 and raw[149, 0, 1] == 1 and raw[:, 0, 2].sum() == 0


def test_bad_config_and_input():
    with pytest.raises(ConfigError, match="custom_weights needs 6"):
        SLMEConfig(weighting="custom", custom_weights=[1.0])
    with pytest.raises(ConfigError, match="no paper prior"):
        SLMEConfig(scheme="raw")
    with pytest.raises(ValueError, match="label map"):
        SLME(SLMEConfig())(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="integer class ids"):
        SLME(SLMEConfig())(np.zeros((2, 2), np.float32))


def test_multilevel_masks_keep_label_fractions():
    labels = np.zeros((64, 64), np.uint8)
    labels[:, :32] = 10  # left half sky (cityscapes 10), right half road (0)
    enc = SLME(SLMEConfig(label_set="cityscapes"))(labels)
    masks = multilevel_masks(enc, strides=(8, 16, 32))
    assert [m.shape[-1] for m in masks] == [8, 4, 2]
    coarse = masks[2]
    assert coarse[2, :, 0].eq(1.0).all() and coarse[2, :, 1].eq(0).all()  # sky channel
    assert coarse[3, :, 1].eq(1.0).all()  # ground channel
