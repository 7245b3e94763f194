import numpy as np
import pytest

from structvpr_core.models.checkpoint import save_checkpoint
from structvpr_core.runtime.encoder import RawPixelEncoder, load_encoder
from structvpr_core.runtime.preprocess import to_input_tensor
from structvpr_core.models.branches import ModelConfig, RGBBranch


def _nordland(shared, season, frame):
    import cv2

    img = cv2.imread(str(shared / f"data/nordland64/{season}/images-{frame:05d}.png"))
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_raw_pixel_descriptor_matches_same_place_across_seasons(shared):
    enc = RawPixelEncoder()
    frames = range(29000, 30000, 10)  # 100 consecutive places, test stretch
    db = enc.encode([_nordland(shared, "summer", f) for f in frames])
    q = enc.encode([_nordland(shared, "winter", f) for f in frames])
    assert db.shape == (100, 64 * 32) and np.allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    top1 = (q @ db.T).argmax(1)
    # measured 23% exact-frame R@1 (chance: 1%); a broken normalisation falls to chance
    assert (top1 == np.arange(100)).mean() >= 0.10


def test_random_baseline_is_deterministic_and_checkpoint_encoder_matches_model(shared, tmp_path):
    img = [_nordland(shared, "summer", 30000)]
    a = load_encoder("random-mobilenetv2", "cpu", (64, 32), precision="fp32").encode(img)
    b = load_encoder("random-mobilenetv2", "cpu", (64, 32), precision="fp32").encode(img)
    assert np.array_equal(a, b) and a.shape == (1, 448)
    model = RGBBranch(ModelConfig("rgb", (64, 32))).eval()
    save_checkpoint(tmp_path / "m.pt", model)
    enc = load_encoder(str(tmp_path / "m.pt"), "cpu", precision="fp32")
    import torch

    with torch.no_grad():
        ref = model(to_input_tensor(img, (64, 32))).numpy()
    assert np.allclose(enc.encode(img), ref, atol=1e-5)


def test_bad_specs_and_images():
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a baseline"):
        load_encoder("no-such-model.pt")
    with pytest.raises(ValueError, match="RGB uint8"):
        to_input_tensor([np.zeros((4, 4), np.uint8)], (32, 32))


def test_preprocessing_matches_imagenet_constants_written_out():
    # (v / 255 - mean) / std with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224,
    # 0.225), computed by hand: a wrong constant, channel order or scale changes these digits
    pixel = np.array([[[255, 0, 128]]], np.uint8)
    x = to_input_tensor([pixel], (1, 1))
    assert x.shape == (1, 3, 1, 1)
    assert np.allclose(x.ravel().numpy(), [2.2489083, -2.0357143, 0.4264924], atol=1e-6)
    # 2x2 -> 1x1 shrink averages the block (INTER_AREA): red (0 + 255 + 255 + 255) / 4 = 191.25
    block = np.zeros((2, 2, 3), np.uint8)
    block[0, 1] = block[1, 0] = block[1, 1] = (255, 0, 0)
    red = to_input_tensor([block], (1, 1))[0, 0, 0, 0].item()
    assert abs(red - (191.25 / 255 - 0.485) / 0.229) < 0.02  # OpenCV rounds the average to uint8 (191)


def test_lite0_trunk_is_fed_its_own_normalisation(shared):
    # EfficientNet-Lite0 reads (x - 127) / 128, not ImageNet's: written out for one pixel
    lite0 = ((127 / 255,) * 3, (128 / 255,) * 3)
    pixel = np.array([[[255, 0, 128]]], np.uint8)
    assert np.allclose(to_input_tensor([pixel], (1, 1), *lite0).ravel().numpy(), [1.0, -127 / 128, 1 / 128], atol=1e-6)
    import torch

    from structvpr_core.runtime.network import NetworkEncoder

    torch.manual_seed(0)
    model = RGBBranch(ModelConfig("rgb", (64, 32), trunk="efficientnet-lite0")).eval()
    assert np.allclose([model.input_mean, model.input_std], lite0)
    img = [_nordland(shared, "summer", 30000)]
    with torch.no_grad():
        own = model(to_input_tensor(img, (64, 32), *lite0)).numpy()
        imagenet = model(to_input_tensor(img, (64, 32))).numpy()
    got = NetworkEncoder(model, "lite0", "cpu", runtime="torch", precision="fp32").encode(img)
    assert np.allclose(got, own / np.linalg.norm(own), atol=1e-5)
    assert not np.allclose(got, imagenet / np.linalg.norm(imagenet), atol=1e-3)
