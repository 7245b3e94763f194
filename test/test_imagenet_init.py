"""The offline ImageNet start (coral MobileNetV2 TFLite -> torchvision layout) is the real network.

(a) our torch model and the original TFLite model (run by ai-edge-litert) pick the same ImageNet
class on real photos; (b) the converted weights beat random init on real place recognition.
"""

import importlib.util

import pytest
import torch

from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.tflite_mobilenetv2 import coral_state_dict
from structvpr_core.paths import REPO_ROOT
from structvpr_core.runtime.encoder import load_encoder

_spec = importlib.util.spec_from_file_location("verify_imagenet_init", REPO_ROOT / "scripts" / "verify_imagenet_init.py")
verify = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verify)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_converted_model_agrees_with_tflite_on_real_photos(shared):
    files = verify.photos(step=2)
    agree = verify.top1_agreement({"tf-same": verify.imagenet_classifier("tf-same")}, files)["tf-same"]
    # measured 59/60 on all 60 photos (29/60 with torchvision's padding: docs/imagenet_init.md)
    assert len(files) >= 25 and agree / len(files) >= 0.9, f"{agree}/{len(files)} same top-1"


def test_imagenet_start_beats_random_init_day_to_night(shared):
    """Gardens Point day_right -> night_right, 50 frames, R@1 with +-2 frames, 224x160 input."""

    def recall_at_1(spec):
        encoder = load_encoder(spec, device="cpu", input_size=(224, 160))
        return verify.gardenspoint_recall(encoder, "day_right", "night_right", range(100, 200, 2))[0]

    pretrained, random = recall_at_1("imagenet-mobilenetv2"), recall_at_1("random-mobilenetv2")
    print(f"day->night R@1: imagenet {pretrained:.2f}, random {random:.2f}")
    assert pretrained >= random + 0.3, (pretrained, random)


def test_conversion_is_cached_and_bad_sources_fail_clearly(shared, tmp_path):
    first = coral_state_dict()
    cached = list((tmp_path / "cache" / "structvpr").glob("mobilenet_v2_tflite_*.pth"))
    assert len(cached) == 1
    second = coral_state_dict()  # from the cache file now
    assert all(torch.equal(first[k], second[k]) for k in first)

    model = RGBBranch(ModelConfig("rgb", (64, 64), padding="tf-same"))
    model.load_imagenet("coral")
    assert torch.equal(model.stages[0][0][0].weight, first["features.0.0.weight"])
    with pytest.raises(FileNotFoundError, match="TFLite file not found"):
        model.load_imagenet(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ValueError, match="not a readable TFLite model"):
        model.load_imagenet(junk)
    deeplab_tflite = shared / "models" / "deeplab_ade20k" / "lite-model_deeplabv3-mobilenetv2-ade20k_1_default_1.tflite"
    with pytest.raises(ValueError, match="not this network"):
        model.load_imagenet(deeplab_tflite)


def test_tf_trained_weights_need_tf_padding():
    from structvpr_core.config import ConfigError

    with pytest.raises(ConfigError, match="padding: tf-same"):
        RGBBranch(ModelConfig("rgb", (64, 64))).load_imagenet("coral")
    with pytest.raises(ConfigError, match="padding 'tf-same' is for the rgb branch"):
        ModelConfig("seg", (64, 64), padding="tf-same")


def test_coral_start_survives_checkpoint_and_training_config(tmp_path):
    from structvpr_core.config import from_dict
    from structvpr_core.models.checkpoint import load_checkpoint, save_checkpoint
    from structvpr_core.train.config import Stage1Config

    stage = from_dict(Stage1Config, {"model": {"branch": "rgb", "input_size": [96, 64], "padding": "tf-same"},
                                     "imagenet_weights": "coral"})
    model = RGBBranch(stage.model)
    model.load_imagenet(stage.imagenet_weights)
    save_checkpoint(tmp_path / "coral.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "coral.pt", expect_branch="rgb")
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
        plain = RGBBranch(ModelConfig("rgb", (96, 64)))
        plain.load_state_dict(model.state_dict())  # same parameters, torchvision padding
        assert not torch.allclose(plain.eval()(x), model(x), atol=1e-3)
