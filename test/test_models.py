import pytest
import torch

from structvpr_core.models.checkpoint import (CheckpointError, load_checkpoint, save_checkpoint, state_dict_sha256,
                                              upgrade_checkpoint)
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


def _tampered(path, tmp_path, name, edit):
    """A copy of the checkpoint at ``path`` with ``edit(payload)`` applied, written as torch.save does."""
    payload = torch.load(path, weights_only=True)
    edit(payload)
    out = tmp_path / name
    torch.save(payload, out)
    return out


def test_checkpoint_hash_covers_config_and_bad_layouts_get_clear_errors(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "rgb.pt"
    save_checkpoint(path, RGBBranch(ModelConfig("rgb", (64, 32))).eval())
    # an edited input size (same weights fit it) must be refused, not loaded silently
    resized = _tampered(path, tmp_path, "resized.pt", lambda p: p["config"].update(input_size=[128, 64]))
    with pytest.raises(CheckpointError, match="hash mismatch.*architecture config"):
        load_checkpoint(resized)
    cases = {
        "no_hash.pt": (lambda p: p.pop("sha256"), "missing sha256"),
        "no_weights.pt": (lambda p: p.pop("state_dict"), "missing state_dict"),
        "array_weights.pt": (lambda p: p["state_dict"].update({"extra": [1.0, 2.0]}),
                             r"named tensors, not 'extra' \(list\)"),
        "empty_weights.pt": (lambda p: p.update(state_dict={}), "non-empty mapping of tensors"),
        "list_config.pt": (lambda p: p.update(config=["rgb"]), "config must be a mapping"),
        "int_hash.pt": (lambda p: p.update(sha256=5), "sha256 must be a hex string"),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(_tampered(path, tmp_path, name, edit))


def test_format_1_checkpoint_is_refused_with_the_upgrade_command_which_keeps_the_weights(tmp_path):
    torch.manual_seed(0)
    model = RGBBranch(ModelConfig("rgb", (64, 32))).eval()
    path = tmp_path / "rgb.pt"
    save_checkpoint(path, model)

    def as_format_1(p):
        p.update(format="structvpr-checkpoint/1", sha256=state_dict_sha256(p["state_dict"]))

    old = _tampered(path, tmp_path, "old.pt", as_format_1)
    with pytest.raises(CheckpointError, match="format 1.*--upgrade"):
        load_checkpoint(old)
    corrupt = _tampered(old, tmp_path, "old_corrupt.pt", lambda p: next(iter(p["state_dict"].values())).mul_(2))
    with pytest.raises(CheckpointError, match="hash mismatch"):
        upgrade_checkpoint(corrupt)
    assert upgrade_checkpoint(old) == torch.load(path, weights_only=True)["sha256"]
    loaded, payload = load_checkpoint(old)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_shipped_checkpoints_load():
    from structvpr_core.paths import REPO_ROOT

    # file name prefix -> (trunk, descriptor dim, input size) its model card states
    expected = {"nordland64_": ("mobilenetv2", 448, (64, 32)), "lite0_realres_": ("efficientnet-lite0", 472, (320, 160))}
    paths = sorted((REPO_ROOT / "training" / "checkpoints").glob("*.pt"))
    assert paths and all(any(p.name.startswith(k) for k in expected) for p in paths), paths
    for path in paths:
        trunk, dim, size = next(v for k, v in expected.items() if path.name.startswith(k))
        model, payload = load_checkpoint(path, expect_branch="rgb", expect_dim=dim)
        assert payload["format"] == "structvpr-checkpoint/2"
        assert (model.config.trunk, model.config.input_size) == (trunk, size)
        assert path.with_suffix(".md").is_file(), f"{path.name} ships without a model card"


def test_fp16_export_keeps_config_and_meta_and_close_descriptors(tmp_path):
    from structvpr_core.models.checkpoint import main as checkpoint_main

    torch.manual_seed(0)
    model = RGBBranch(ModelConfig("rgb", (128, 64), trunk="efficientnet-lite0")).eval()
    save_checkpoint(tmp_path / "full.pt", model, meta={"seed": 3})
    assert checkpoint_main(["--export-fp16", str(tmp_path / "full.pt"), str(tmp_path / "half.pt")]) == 0
    half, payload = load_checkpoint(tmp_path / "half.pt", expect_branch="rgb")
    assert payload["meta"]["seed"] == 3 and payload["meta"]["exported_fp16_from_sha256"]
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(model(x), half(x)).min() > 0.999
    assert checkpoint_main(["--export-fp16", str(tmp_path / "absent.pt"), str(tmp_path / "x.pt")]) == 2


def test_a_checkpoint_with_nan_weights_is_refused_naming_it(tmp_path):
    from structvpr_core.runtime.encoder import load_encoder

    model = RGBBranch(ModelConfig("rgb", (64, 32))).eval()
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))  # a diverged run, saved with a valid hash
    path = tmp_path / "diverged.pt"
    save_checkpoint(path, model)
    with pytest.raises(CheckpointError, match=f"{path}: 1 weight tensors hold NaN or inf"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=f"{path}: 1 weight tensors hold NaN or inf"):
        load_encoder(str(path), "cpu", runtime="torch")
