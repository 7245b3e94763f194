import pytest
import torch

from structvpr_core.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from structvpr_core.config import ConfigError, from_dict
from structvpr_core.models.branches import MCHead, ModelConfig, RGBBranch, SegBranch, Transform, triplet_loss
from structvpr_core.segmentation.slme import SLMEConfig


def test_rgb_branch_stages_and_448_descriptor():
    model = RGBBranch(ModelConfig("rgb", (128, 96))).eval()
    x = torch.randn(2, 3, 96, 128)
    stages = model.forward_stages(x)
    assert [s.shape[1] for s in stages] == [16, 24, 32, 96, 320]
    assert [s.shape[-1] for s in stages] == [64, 32, 16, 8, 4]  # strides 2..32
    d = model(x)
    assert d.shape == (2, 448) and model.dim == 448
    assert torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)


def test_seg_branch_480_descriptor_and_channels_follow_slme():
    model = SegBranch(ModelConfig("seg", (64, 64), slme=SLMEConfig(scheme="c3"))).eval()
    assert model.config.in_channels == 3
    stages = model.forward_stages(torch.randn(1, 3, 64, 64))
    assert [s.shape[1] for s in stages] == [16, 32, 64, 96, 320]
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 480)
    assert SegBranch(ModelConfig("seg", (64, 64))).config.in_channels == 6


def test_mc_head_is_gmp_l2_concat_l2():
    a, b = torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)
    a[0, 0, 1, 1], a[0, 1, 0, 0] = 3.0, 4.0  # GMP -> (3,4) -> L2 -> (0.6, 0.8)
    b[0, 0, 0, 1] = 5.0  # -> (1,)
    out = MCHead((1, 2))([a, b])
    expected = torch.tensor([[0.6, 0.8, 1.0]]) / torch.tensor(2.0).sqrt()
    assert torch.allclose(out, expected)


def test_transform_and_triplet_loss():
    assert Transform()(torch.randn(3, 448)).shape == (3, 480)
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.8, 0.6]])  # d(q,p) = sqrt(0.4)
    n = torch.tensor([[0.0, 1.0]])  # d(q,n) = sqrt(2)
    assert triplet_loss(q, p, n).item() == 0.0
    assert triplet_loss(q, n, p).item() == pytest.approx(2**0.5 - 0.4**0.5 + 0.1, abs=1e-5)


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="too small"):
        ModelConfig("rgb", (16, 16))
    with pytest.raises(ConfigError, match="only for branch 'seg'"):
        ModelConfig("rgb", slme=SLMEConfig())
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(ModelConfig, {"branch": "rgb", "input_sise": [64, 32]})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(ModelConfig, {"branch": "depth"})
    cfg = from_dict(ModelConfig, {"branch": "seg", "input_size": [64, 32], "slme": {"label_set": "camvid"}})
    assert cfg.input_size == (64, 32) and cfg.slme.label_set == "camvid"


def test_checkpoint_round_trip_fp16_and_checks(tmp_path):
    torch.manual_seed(0)
    model = RGBBranch(ModelConfig("rgb", (64, 32))).eval()
    path = tmp_path / "rgb.pt"
    save_checkpoint(path, model, meta={"seed": 0}, half=True)
    loaded, payload = load_checkpoint(path, expect_branch="rgb", expect_dim=448)
    assert payload["meta"] == {"seed": 0}
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=2e-3)  # fp16 storage
    with pytest.raises(CheckpointError, match="'rgb' branch model, expected 'seg'"):
        load_checkpoint(path, expect_branch="seg")
    with pytest.raises(CheckpointError, match="448-d descriptors, expected 480-d"):
        load_checkpoint(path, expect_dim=480)
    # flip one byte inside the file: either unreadable or hash mismatch, never a silent load
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_imagenet_loading_from_local_file_and_clear_offline_error(tmp_path):
    import torchvision

    reference = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mnv2.pth"
    torch.save(reference.state_dict(), path)
    model = RGBBranch(ModelConfig("rgb", (64, 64)))
    model.load_imagenet(path)
    assert torch.equal(model.stages[4][-1].conv[-1].weight, reference.features[17].conv[-1].weight)
    torch.save({"wrong": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_imagenet(tmp_path / "wrong.pth")
