"""Inference paths (structvpr_core.runtime.inference): choice rules and accuracy against fp32 on real frames."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from structvpr_core.config import ConfigError
from structvpr_core.runtime.encoder import load_encoder
from structvpr_core.runtime import inference
from structvpr_core.runtime.inference import (InferencePath, choose_path, cpu_supports_bf16, onnxruntime_installed,
                                              openvino_installed)
from structvpr_core.runtime.network import NetworkEncoder

STUDENT = "training/checkpoints/lite0_realres_none_seed2_fp16.pt"  # the default model
CPU = torch.device("cpu")


def _available(runtime: str, precision: str) -> bool:
    if runtime == "onnxruntime":
        return onnxruntime_installed()
    if runtime == "openvino" and not openvino_installed():
        return False
    return precision != "bf16" or cpu_supports_bf16()


def _gardens_point(shared, frames=(0, 120)):
    """Real 960x540 campus frames (day) and a night frame: the node's input size class."""
    paths = [shared / f"data/gardenspoint/day_left/Image{f:03d}.jpg" for f in frames]
    paths.append(shared / "data/gardenspoint/night_right/Image100.jpg")
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


@pytest.fixture(scope="module")
def fp32_reference(shared):
    """model -> (real frames, their torch fp32 descriptors at 640x480), computed once."""
    images, cache = _gardens_point(shared), {}

    def get(model):
        if model not in cache:
            cache[model] = load_encoder(model, "cpu", (640, 480), runtime="torch", precision="fp32").encode(images)
        return images, cache[model]

    return get


@pytest.mark.parametrize("runtime,precision", [("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
                                               ("openvino", "bf16")])
@pytest.mark.parametrize("model", [STUDENT, "random-mobilenetv2"])
def test_fast_paths_stay_within_cosine_099_of_fp32_on_real_frames(fp32_reference, runtime, precision, model):
    if not _available(runtime, precision):
        pytest.skip(f"{runtime} {precision} is not available on this machine")
    images, ref = fp32_reference(model)
    fast_encoder = load_encoder(model, "cpu", (640, 480), runtime=runtime, precision=precision)
    assert fast_encoder.path == InferencePath(runtime, precision)
    fast = fast_encoder.encode(images)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)  # the map index requires it
    cosine = np.sum(ref * fast, axis=1)  # both L2-normalised
    assert cosine.min() >= 0.99, cosine  # R@1 on real sets: benchmarks/encoder_latency.py --recall


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_tf_same_padding_matches_torch_on_odd_feature_maps(shared, runtime):
    """The paper's ImageNet MobileNetV2 pads its stride-2 convs TF's way; at 480x270 (the benchmark's
    Gardens Point size) 270 -> 135 gives odd maps, where a floor-division idiom once exported
    the wrong pads (cosine 0.97 to torch, flipping R@1 on the night set)."""
    if not _available(runtime, "fp32"):
        pytest.skip(f"{runtime} is not available on this machine")
    images = _gardens_point(shared)
    ref = load_encoder("imagenet-mobilenetv2", "cpu", (480, 270), runtime="torch").encode(images)
    exported = load_encoder("imagenet-mobilenetv2", "cpu", (480, 270), runtime=runtime).encode(images)
    assert np.sum(ref * exported, axis=1).min() >= 0.9999


class _TinyTrunk(torch.nn.Module):
    """Not a StructVPR network (no config, no dim): any module with forward(x) -> (B, dim) must run."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return torch.nn.functional.normalize(self.conv(x).amax(dim=(2, 3)), dim=1)


@pytest.mark.parametrize("runtime,precision", [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"),
                                               ("openvino", "fp32"), ("openvino", "bf16")])
def test_any_module_with_forward_runs_on_every_path(shared, runtime, precision):
    if not _available(runtime, precision):
        pytest.skip(f"{runtime} {precision} is not available on this machine")
    images = _gardens_point(shared, frames=(5,))
    torch.manual_seed(0)
    ref = NetworkEncoder(_TinyTrunk(), "tiny", "cpu", (96, 64), "torch", "fp32").encode(images)
    torch.manual_seed(0)
    got = NetworkEncoder(_TinyTrunk(), "tiny", "cpu", (96, 64), runtime, precision).encode(images)
    assert got.shape == (2, 8) and got.dtype == np.float32
    assert np.sum(ref * got, axis=1).min() >= 0.99


def test_auto_choice_follows_the_cpu_and_installed_runtimes(tmp_path, monkeypatch):
    with_bf16 = tmp_path / "cpuinfo_bf16"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "cpuinfo_avx2"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_supports_bf16(with_bf16) and not cpu_supports_bf16(without)
    assert choose_path(torch.device("cuda")) == InferencePath("torch", "fp16")
    assert onnxruntime_installed() and openvino_installed()  # requirements.txt
    # auto = exact (ONNX Runtime fp32) on any CPU: bf16 moved a benchmark set by up to 1.9 R@1
    # points, so it must be asked for, and then it is OpenVINO's (closest to fp32, fastest)
    for has_bf16 in (True, False):
        monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: has_bf16)
        assert choose_path(CPU) == InferencePath("onnxruntime", "fp32")
        assert choose_path(CPU, "openvino") == InferencePath("openvino", "fp32")
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: True)
    assert choose_path(CPU, "auto", "bf16") == InferencePath("openvino", "bf16")
    assert choose_path(CPU, "openvino", "bf16") == InferencePath("openvino", "bf16")
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ConfigError, match="AVX512-BF16 or AMX"):
        choose_path(CPU, "openvino", "bf16")
    assert choose_path(CPU, "torch", "fp32") == InferencePath("torch", "fp32")


@pytest.mark.parametrize("device,runtime,precision,message", [
    ("cpu", "torch", "fp16", "fp16' needs CUDA"),
    ("cuda", "onnxruntime", "auto", "runs on the CPU only"),
    ("cuda", "openvino", "auto", "runs on the CPU only"),
    ("cpu", "onnxruntime", "bf16", "bf16 is runtime openvino or torch"),
    ("cpu", "tensorrt", "auto", "runtime must be one of"),
    ("cpu", "auto", "int4", "precision must be one of"),
])
def test_impossible_combinations_are_refused_with_the_reason(device, runtime, precision, message):
    with pytest.raises(ConfigError, match=message):
        choose_path(torch.device(device), runtime, precision)


def test_bf16_is_refused_on_a_cpu_without_it():
    if cpu_supports_bf16():
        pytest.skip("this CPU has bf16")
    with pytest.raises(ConfigError, match="AVX512-BF16 or AMX"):
        choose_path(CPU, "torch", "bf16")


def test_raw_pixel_encoder_does_not_import_torch():
    code = ("import sys, numpy as np; from structvpr_core.runtime.encoder import load_encoder; "
            "load_encoder('raw-pixel').encode([np.random.default_rng(0).integers(0, 255, (32, 64, 3), np.uint8)]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
