"""StructVPR++ label-level features (our interpretation): shapes, masking on a hand-made label
map, the LC comparison, the stage II loss on a hand-computed batch, checkpoint -> encoder ->
map database with the longer descriptor, and a real stage I + II run on a few nordland64 frames."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from structvpr_core.config import ConfigError
from structvpr_core.data.datasets import NORDLAND64_SPLITS
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.factory import build_model
from structvpr_core.models.checkpoint import load_checkpoint, save_checkpoint
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.models.label_features import LabelAwareModel, LabelPooling, combine, label_concat
from structvpr_core.retrieval.map_database import MapDatabase, ModelIdentity
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.segmentation.segment import Segmenter, SegmenterConfig
from structvpr_core.segmentation.slme import SLME, SLMEConfig, multilevel_masks
from structvpr_core.train.config import load_experiment
from structvpr_core.train.partition import run_partition
from structvpr_core.train.plusplus import PlusPlusConfig, kd_targets, label_aware_student
from structvpr_core.train.stage1 import run_stage1
from structvpr_core.train.stage2 import PairWeights, distillation_loss, run_stage2, stage2_dir
from test_train_smoke import CONFIG as SMOKE_CONFIG

LABELS = LabelFeatureConfig(num_labels=6, label_dim=16)
SEG = ModelConfig("seg", (64, 32), SLMEConfig(label_set="cityscapes"), label_features=LABELS)
RGB = ModelConfig("rgb", (64, 32), label_features=LABELS)
BUILDING, SKY, VOID = 2, 10, 19  # Cityscapes ids; c6 channels: buildings 4, sky 2; 19 = void


def hand_label_map() -> np.ndarray:
    """32x64: building in columns 0..35, sky from 36 on, an 8x8 void block at the top left."""
    labels = np.full((32, 64), BUILDING, np.uint8)
    labels[:, 36:] = SKY
    labels[:8, :8] = VOID
    return labels


def test_shapes_and_dims():
    torch.manual_seed(0)
    teacher, student = build_model(SEG), build_model(RGB)
    assert isinstance(teacher, LabelAwareModel) and isinstance(student, LabelAwareModel)
    assert SEG.dim == teacher.dim == 480 + 6 * 16 and RGB.dim == student.dim == 448 + 6 * 16
    x = SLME(SEG.slme)(hand_label_map()).unsqueeze(0).repeat(2, 1, 1, 1)
    out_t, out_s = teacher.eval()(x), student.eval()(torch.randn(2, 3, 32, 64))
    assert out_t.shape == (2, teacher.dim) and out_s.shape == (2, student.dim)
    torch.testing.assert_close(out_t.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(out_s.norm(dim=1), torch.ones(2))
    g, label = teacher.forward_parts(x)
    torch.testing.assert_close(out_t, combine(g, label, 1.0))  # global and label parts weigh alike
    torch.testing.assert_close(out_t[:, :480] / out_t[:, :480].norm(dim=1, keepdim=True), g)


def test_label_count_must_match_the_slme_channels():
    with pytest.raises(ConfigError, match="must equal the SLME channels"):
        ModelConfig("seg", (64, 32), SLMEConfig(scheme="c3"), label_features=LABELS)


def test_masks_pool_each_label_region_by_area_on_a_hand_made_map():
    slme = SLME(SLMEConfig(label_set="cityscapes"))
    presence = (slme(hand_label_map()) > 0).float().unsqueeze(0)
    (mask,) = multilevel_masks(presence, strides=(8,))  # one 4x8 level
    building, sky = mask[0, 4], mask[0, 2]
    # cell (0, 0) is the void block; column 4 (pixels 32..39) is half building, half sky
    assert building[0, 0] == 0 and building[1, 0] == 1 and building[0, 4] == 0.5 and sky[0, 4] == 0.5
    assert mask[0, [0, 1, 3, 5]].sum() == 0  # vegetation, dynamic, ground, other: absent

    fmap = torch.arange(2 * 4 * 8, dtype=torch.float32).reshape(1, 2, 4, 8) + 1.0  # 2 channels
    pooling = LabelPooling([2], label_dim=2)
    with torch.no_grad():  # identity projection: the output is the L2-normalised masked mean
        pooling.project.weight.copy_(torch.eye(2))
        pooling.project.bias.zero_()
    feats = pooling([fmap], [mask])[0]
    cells = fmap[0].reshape(2, -1)
    w = building.reshape(-1)
    expected = (cells * w).sum(dim=1) / w.sum()  # by hand: area-weighted mean over the building cells
    torch.testing.assert_close(feats[4], F.normalize(expected, dim=0))
    assert feats[0].abs().sum() == 0  # an absent label pools to nothing

    teacher = build_model(SEG).eval()  # and the real teacher gives absent labels weight 0
    _, weights = teacher.label_head.label_parts(teacher.forward_stages(slme(hand_label_map())[None]),
                                                slme(hand_label_map())[None])
    assert (weights[0, [0, 1, 3, 5]] == 0).all() and (weights[0, [2, 4]] > 0).all()


def test_label_concat_compares_a_pair_label_by_label():
    feats_a = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]), dim=2)
    feats_b = F.normalize(torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-1.0, 1.0]]]), dim=2)
    wa, wb = torch.tensor([[0.5, 1.0, 0.0]]), torch.tensor([[0.8, 0.6, 1.0]])
    sim = (label_concat(feats_a, wa) * label_concat(feats_b, wb)).sum()
    # by hand: labels 0 (cos 1) and 1 (cos 0) count, label 2 is absent in a
    expected = (0.5 * 0.8 * 1.0 + 1.0 * 0.6 * 0.0) / (math.sqrt(0.25 + 1.0) * math.sqrt(0.64 + 0.36 + 1.0))
    assert float(sim) == pytest.approx(expected, abs=1e-6)


def test_stage2_loss_on_a_hand_computed_batch():
    config = PlusPlusConfig(global_kd=4.0, label_kd=1.0)
    # teacher descriptor = combine(g=[0.6, 0.8], L=[1, 0, 0]) for image 0; no label present for image 1
    teacher = torch.tensor([[0.6, 0.8, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0]]) / torch.tensor([[math.sqrt(2)], [2.0]])
    targets = kd_targets(teacher, 2, config)
    torch.testing.assert_close(targets, torch.tensor([[1.2, 1.6, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0]]))
    # distiller outputs [deploy (1 col here) | 2 T(g_S) | L_S]; every image's output misses its target
    # by (0, 0, -1, 1, 0) = squared distance 2 for image 0 and (0.5, 0, 0, 0, 0) = 0.25 for image 1
    out = torch.cat([torch.zeros(2, 1), targets + torch.tensor([[0.0, 0.0, -1.0, 1.0, 0.0], [0.5, 0, 0, 0, 0]])], 1)
    # phi per (q, p) pair: the same query 7 with two positives weighs 0.5 and 2.0
    pair_phi = PairWeights(np.array([7, 7, 9]), np.array([3, 5, 3]), np.array([0.5, 2.0, 1.0]))
    phi = torch.from_numpy(pair_phi(np.array([7, 7]), np.array([3, 5])))
    _, _, kd = distillation_loss(out, out, out, (targets, targets, targets), phi, dim=1, margin=0.1)
    assert float(kd) == pytest.approx((0.5 * 3 * 2.0 + 2.0 * 3 * 0.25) / 2)


def test_label_dim_adds_to_any_trunk():
    lite = ModelConfig("rgb", (64, 32), trunk="efficientnet-lite0", label_features=LABELS)
    student = build_model(lite).eval()
    assert lite.dim == student.dim == 40 + 112 + 320 + 6 * 16
    assert (student.input_mean, student.input_std) == (student.trunk.input_mean, student.trunk.input_std)
    assert student(torch.randn(1, 3, 32, 64)).shape == (1, lite.dim)


def test_student_checkpoint_goes_through_encoder_and_map_database(tmp_path, shared):
    torch.manual_seed(0)
    plain = RGBBranch(ModelConfig("rgb", (64, 32)))
    student = label_aware_student(plain, LABELS, PlusPlusConfig(label_weight=0.5, student_hidden=32))
    torch.testing.assert_close(student.trunk.stages[4][0].conv[0][0].weight, plain.stages[4][0].conv[0][0].weight)
    path = tmp_path / "pp.pt"
    save_checkpoint(path, student)
    loaded, _ = load_checkpoint(path, expect_branch="rgb", expect_dim=448 + 96)
    assert isinstance(loaded, LabelAwareModel) and loaded.config.label_features.label_weight == 0.5

    frames = [cv2.cvtColor(cv2.imread(str(shared / "data" / "nordland64" / s / "images-30000.png")), cv2.COLOR_BGR2RGB)
              for s in ("summer", "winter")]
    encoder = load_encoder(str(path), device="cpu")
    desc = encoder.encode(frames)
    assert encoder.dim == 544 and desc.shape == (2, 544)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    db = MapDatabase(ModelIdentity.of_encoder(encoder))
    db.add_batch(desc[:1], [0], ["summer"])
    (hit, score), = db.query(desc[1], k=1)
    assert hit == 0 and score == pytest.approx(float(desc[0] @ desc[1]), abs=1e-5)
    db.save(tmp_path / "map")
    assert len(MapDatabase.load(tmp_path / "map", expect_model=db.model)) == 1


N_TRAIN, N_VAL = 24, 8  # train >= 21 places (negatives lie beyond +-10 files), val > 5 (R@5)
# test_train_smoke's pipeline config, with the StructVPR++ switches on (phi = 1: every pair is distilled)
PLUSPLUS = """
extends: base.yaml
stage1_rgb: {optim: {batch_size: 12}}
stage1_seg:
  model: {label_features: {num_labels: 6, label_dim: 8}}
  optim: {batch_size: 12}
stage2:
  name: plusplus
  kd: {weights: all}
  student_init: stage1
  plusplus: {label_weight: 1.0, student_hidden: 32}
  optim: {batch_size: 12}
"""


def test_plusplus_stage1_and_stage2_on_real_frames(tmp_path, shared):
    root = shared / "data" / "nordland64"
    # label cache for the first train / val places, segmented at 192x96 (at 64x32 the
    # Cityscapes ESPNet labels these frames void; 192x96 finds sky, building, vegetation)
    segmenter = Segmenter(SegmenterConfig(shared / "models" / "espnet" / "espnet_p2_q8_cityscapes.pth",
                                          size=(192, 96)))
    present = set()
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        lo = NORDLAND64_SPLITS[split][0]
        for season in ("summer", "winter"):
            (tmp_path / "labels" / season).mkdir(parents=True, exist_ok=True)
            for frame in range(lo, lo + 10 * n, 10):
                rgb = cv2.cvtColor(cv2.imread(str(root / season / f"images-{frame:05d}.png")), cv2.COLOR_BGR2RGB)
                labels = segmenter.predict(rgb)
                present |= set(np.unique(labels).tolist())
                cv2.imwrite(str(tmp_path / "labels" / season / f"images-{frame:05d}.png"), labels)
    assert {BUILDING, SKY} <= present  # the teacher has real labels to pool
    (tmp_path / "base.yaml").write_text(SMOKE_CONFIG.format(out=tmp_path / "run", root=root, labels=tmp_path / "labels",
                                                            n_train=N_TRAIN, n_val=N_VAL))
    (tmp_path / "plusplus.yaml").write_text(PLUSPLUS)
    cfg = load_experiment(tmp_path / "plusplus.yaml")

    run_stage1(cfg, "rgb")
    run_stage1(cfg, "seg")
    teacher, _ = load_checkpoint(cfg.out() / "stage1-seg" / "best.pt", expect_branch="seg", expect_dim=480 + 48)
    assert teacher.label_head.weighting is not None
    run_partition(cfg)
    run_stage2(cfg)
    student, payload = load_checkpoint(stage2_dir(cfg) / "best.pt", expect_branch="rgb", expect_dim=448 + 48)
    assert isinstance(student, LabelAwareModel) and payload["meta"]["kd"]["weights"] == "all"
    history = (stage2_dir(cfg) / "history.json").read_text()
    assert '"kd"' in history and "NaN" not in history

    # the same arm on a frozen prefix (the real-resolution recipe): stages 1-4 stay those of stage I
    (tmp_path / "frozen.yaml").write_text("extends: plusplus.yaml\nstage2: {name: plusplus_frozen, train_from_stage: 5}\n")
    frozen_cfg = load_experiment(tmp_path / "frozen.yaml")
    run_stage2(frozen_cfg)
    frozen, _ = load_checkpoint(stage2_dir(frozen_cfg) / "best.pt", expect_branch="rgb", expect_dim=448 + 48)
    start, _ = load_checkpoint(cfg.out() / "stage1-rgb" / "best.pt", expect_branch="rgb")
    for i in range(4):
        assert all(torch.equal(a, b) for a, b in zip(frozen.stages[i].state_dict().values(),
                                                     start.stages[i].state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(frozen.stages[4].state_dict().values(),
                                                     start.stages[4].state_dict().values()))
    assert "NaN" not in (stage2_dir(frozen_cfg) / "history.json").read_text()


def test_plusplus_student_needs_a_label_aware_teacher(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage1_seg: {model: {branch: seg}}\nstage2: {name: x, plusplus: {}}\n")
    with pytest.raises(ConfigError, match="label_features must be set"):
        load_experiment(bad)


@pytest.mark.parametrize("yaml_text, message", [
    ("stage1_rgb: {model: {branch: rgb, label_features: {}}, train_from_stage: 3}\n",
     "needs train_from_stage: 1"),
    ("stage1_rgb: {model: {branch: rgb, label_features: {}}}\nstage1_seg: {model: {branch: seg, label_features: {}}}\n"
     "stage2: {name: x, plusplus: {}}\n", "stage1_rgb.model.label_features must be null"),
])
def test_plusplus_refuses_combinations_it_cannot_train(tmp_path, yaml_text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_experiment(bad)
