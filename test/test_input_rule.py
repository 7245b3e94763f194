"""Issue 18: the network sees the camera's picture at its own aspect (a pixel budget), the same way
in every command, the node and every runtime; issue 20 S2 / S3 / U1: input sizes are bounded and a
map's model identity is the resolved checkpoint file's hash, however the model was named."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from structvpr_core.cli import main
from structvpr_core.config import ConfigError
from structvpr_core.data.images import read_rgb
from structvpr_core.models import shipped
from structvpr_core.models.branches import ModelConfig, RGBBranch
from structvpr_core.models.checkpoint import load_checkpoint, save_checkpoint
from structvpr_core.retrieval.map_database import MapMismatchError, ModelIdentity, open_map
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.runtime.input_rule import NETWORK_STRIDE, InputRule

CAMERAS = [(640, 480), (1280, 720), (1024, 384), (960, 540), (64, 32), (160, 120), (752, 480)]


@pytest.mark.parametrize("pixels", [28800, 76800, 115200, 307200])
def test_a_budget_keeps_the_cameras_aspect_on_the_stride_grid(pixels):
    rule = InputRule(pixels=pixels)
    for width, height in CAMERAS:
        w, h = rule.size_for(width, height)
        assert w % NETWORK_STRIDE == 0 and h % NETWORK_STRIDE == 0
        # within about one grid cell of the camera's aspect and of the budget
        cell = NETWORK_STRIDE / math.sqrt(pixels)
        assert abs(math.log(w / h / (width / height))) <= 1.6 * cell, (width, height, w, h)
        assert abs(math.log(w * h / pixels)) <= 1.6 * cell, (width, height, w, h)
    # the squeeze that was every frame's fate: a fixed size ignores the camera
    assert InputRule(size=(320, 160)).size_for(640, 480) == (320, 160)


def test_shrink_size_covers_the_network_input_at_the_cameras_aspect():
    rule = InputRule(pixels=76800)
    for width, height in CAMERAS:
        sw, sh = rule.shrink_size(width, height)
        w, h = rule.size_for(width, height)
        assert sw <= width and sh <= height
        assert (sw >= w and sh >= h) or (sw, sh) == (width, height)
        assert rule.size_for(sw, sh) == (w, h)  # decoding small first does not change the input size


@pytest.mark.parametrize("kwargs, message", [
    (dict(pixels=100), "pixel budget must be in 1024.."),
    (dict(size=(1, 1)), "each side must be >= 32"),
    (dict(), "either a fixed size or a pixel budget"),
    (dict(size=(320, 160), pixels=51200), "either a fixed size or a pixel budget"),
    (dict(pixels=51200, second_pixels=51200), "a second \\(multi-scale\\) pixel budget needs a first, different one"),
    (dict(pixels=51200, second_pixels=10), "pixel budget must be in"),
])
def test_bad_rules_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        InputRule(**kwargs)
    with pytest.raises(ConfigError, match="pixel budget must be in"):
        ModelConfig("rgb", (320, 160), input_pixels=5)


def test_a_checkpoint_records_its_rule_and_older_checkpoints_keep_their_fixed_size(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "budget.pt", RGBBranch(ModelConfig("rgb", (128, 64), input_pixels=28800)))
    model, payload = load_checkpoint(tmp_path / "budget.pt")
    assert payload["config"]["input_pixels"] == 28800 and model.config.input_rule == InputRule(pixels=28800)
    encoder = load_encoder(str(tmp_path / "budget.pt"), "cpu", runtime="torch")
    assert encoder.input_rule == InputRule(pixels=28800) and encoder.input_size is None
    # a real checkpoint from before the rule: its config has no input_pixels -> its training size
    old = shipped.find_checkpoint("nordland64_none_seed0_fp16.pt")
    assert "input_pixels" not in load_checkpoint(old)[1]["config"]
    assert load_encoder(str(old), "cpu", runtime="torch").input_rule == InputRule(size=(64, 32))
    # input_width/height (or --resize) still force a size, input_pixels another budget
    assert load_encoder(str(old), "cpu", (96, 64), runtime="torch").input_rule == InputRule(size=(96, 64))
    assert load_encoder(str(old), "cpu", runtime="torch", input_pixels=51200).input_rule == InputRule(pixels=51200)


def _real_frames(shared):
    data = shared / "data"
    return [read_rgb(data / "gardenspoint/day_right/Image150.jpg"),  # 960x540
            read_rgb(data / "grief_seasons/michigan/images/0101.jpg"),  # 1024x384
            read_rgb(data / "nordland64/winter/images-24000.png"),  # 64x32
            read_rgb(data / "gardenspoint/night_right/Image150.jpg")]  # 640x360, the same 16:9 input


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_runtimes_match_torch_at_sizes_it_never_trained_at(shared, runtime):
    """The default model (trained at 320x160) at a 76800 px budget: three input sizes in one call."""
    frames = _real_frames(shared)
    ref = load_encoder(shipped.DEFAULT_MODEL, "cpu", runtime="torch", precision="fp32", input_pixels=76800)
    got = load_encoder(shipped.DEFAULT_MODEL, "cpu", runtime=runtime, precision="fp32", input_pixels=76800)
    a, b = ref.encode(frames), got.encode(frames)
    assert np.sum(a * b, axis=1).min() > 0.9999
    sizes = {got.input_rule.size_for(f.shape[1], f.shape[0]) for f in frames}
    assert sizes == {(352, 224), (480, 160), (384, 192)}
    assert sizes <= set(got._run.runners)  # one exported graph per input size, kept for the next frame
    assert a[0] @ a[3] < 0.999  # day and night of one place: different pictures, not one squeezed input


def test_images_of_different_aspects_in_one_call_match_one_by_one(shared):
    frames = _real_frames(shared)
    encoder = load_encoder("imagenet-lite0-mc", "cpu", runtime="torch", input_pixels=28800)
    together = encoder.encode(frames)
    alone = np.concatenate([encoder.encode([f]) for f in frames])
    assert np.allclose(together, alone, atol=1e-5)


def test_multi_scale_is_the_normalised_sum_of_two_budgets_on_every_runtime(shared):
    frames = _real_frames(shared)[:3]
    single = [load_encoder("imagenet-lite0-mc", "cpu", runtime="torch", input_pixels=n).encode(frames)
              for n in (51200, 28800)]
    expected = single[0] + single[1]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    for runtime in ("torch", "onnxruntime"):
        both = load_encoder("imagenet-lite0-mc", "cpu", runtime=runtime, input_pixels=(51200, 28800))
        assert np.sum(both.encode(frames) * expected, axis=1).min() > 0.9999
    identity = ModelIdentity.of_encoder(both)
    assert (identity.input_pixels, identity.input_pixels_second) == (51200, 28800)
    assert not identity.compatible_with(ModelIdentity.of_encoder(
        load_encoder("imagenet-lite0-mc", "cpu", runtime="torch", input_pixels=51200)))
    # a decoder must keep enough pixels for the larger scale
    assert both.input_rule.shrink_size(960, 540) == InputRule(pixels=51200).shrink_size(960, 540)


def _build_map(images, model, out):
    assert main(["build-map", "--model", model, "--images", str(images), "--frame-range", "24000:24040",
                 "--device", "cpu", "--out", str(out)]) == 0
    return json.loads((out / "meta.json").read_text())["model"]


def test_a_map_built_by_path_opens_for_the_same_checkpoint_named_bare(shared, tmp_path):
    """U1: the node names the shipped checkpoint by its bare file name, the map was built with its path."""
    path = shipped.find_checkpoint(shipped.DEFAULT_MODEL)
    stored = _build_map(shared / "data/nordland64/summer", str(path), tmp_path / "map")
    sha = load_checkpoint(path)[1]["sha256"]
    assert stored["checkpoint_sha256"] == sha
    bare = ModelIdentity.of_encoder(load_encoder(shipped.DEFAULT_MODEL, "cpu"))
    assert bare.checkpoint_sha256 == sha
    assert len(open_map(tmp_path / "map", bare, create=False)) == 5


def test_a_checkpoint_replaced_in_place_is_refused_for_a_map_built_by_bare_name(shared, tmp_path, monkeypatch):
    """S3: a bare name is resolved first and its hash recorded, so a swapped file is caught."""
    folder = tmp_path / "checkpoints"
    monkeypatch.setattr(shipped, "checkpoint_dirs", lambda: [folder])  # where bare names are looked up
    torch.manual_seed(0)
    first = save_checkpoint(folder / "student.pt", RGBBranch(ModelConfig("rgb", (64, 32))))
    stored = _build_map(shared / "data/nordland64/summer", "student.pt", tmp_path / "map")
    assert stored["checkpoint_sha256"] == first  # not null
    torch.manual_seed(1)
    save_checkpoint(folder / "student.pt", RGBBranch(ModelConfig("rgb", (64, 32))))  # same name, other weights
    replaced = ModelIdentity.of_encoder(load_encoder("student.pt", "cpu"))
    with pytest.raises(MapMismatchError, match="student"):
        open_map(tmp_path / "map", replaced, create=False)


def test_identity_needs_the_same_rule_and_hash():
    a = ModelIdentity("m", 472, "ab" * 32, None, 76800)
    assert a.compatible_with(ModelIdentity("renamed", 472, "ab" * 32, None, 76800))
    assert not a.compatible_with(ModelIdentity("m", 472, "ab" * 32, None, 51200))
    assert not a.compatible_with(ModelIdentity("m", 472, "ab" * 32, (320, 160)))
    assert not a.compatible_with(ModelIdentity("m", 472, None, None, 76800))  # a hash on one side only
    assert "~76800 px" in a.describe()


def test_the_node_refuses_an_input_size_below_the_network_stride():
    """S2: input_width:=1 input_height:=1 gave every image one descriptor; now a refusal naming them."""
    from ros_helpers import overrides, ros_context

    from structvpr_ros.node import StartupError, StructVPRNode

    with ros_context() as context:
        with pytest.raises(StartupError, match="input_width and input_height must each be >= 32"):
            StructVPRNode(context=context, parameter_overrides=overrides(
                model="imagenet-lite0", input_width=1, input_height=1, image_topic="image"))


def test_the_node_decodes_a_camera_jpeg_no_larger_than_its_rule_needs(shared):
    from sensor_msgs.msg import CompressedImage

    from structvpr_ros.image_conversion import message_to_rgb

    rgb = read_rgb(shared / "data/gardenspoint/day_right/Image150.jpg")  # 960x540
    msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
    rule = InputRule(pixels=28800)
    small = message_to_rgb(msg, shrink_to=rule.shrink_size)
    assert small.shape[:2] == (135, 240)  # libjpeg's 1/4 scale: the smallest that still covers 224x128
    assert rule.size_for(small.shape[1], small.shape[0]) == rule.size_for(960, 540) == (224, 128)


def test_the_rule_is_written_into_a_checkpoint_in_place_weights_untouched(tmp_path):
    import shutil

    from structvpr_core.models.checkpoint import CheckpointError, set_input_rule

    path = tmp_path / "student.pt"
    shutil.copy(shipped.find_checkpoint("nordland64_none_seed0_fp16.pt"), path)
    before = load_checkpoint(path)[1]
    sha = set_input_rule(path, 76800, chosen_by="docs/input_budget.md")
    after = load_checkpoint(path)[1]  # verifies under the new hash
    assert after["sha256"] == sha != before["sha256"]
    assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
    assert after["meta"]["input_rule_set_on_sha256"] == before["sha256"]
    assert load_encoder(str(path), "cpu", runtime="torch").input_rule == InputRule(pixels=76800)
    content = path.read_bytes()
    with pytest.raises(CheckpointError, match="input rule refused: input pixel budget must be in"):
        set_input_rule(path, 7)
    assert path.read_bytes() == content  # a refused rule leaves the file as it was
