"""ImageNet MobileNetV2 from a quantised TFLite file, as a torchvision ``mobilenet_v2`` state_dict.

The offline ImageNet start for the paper's student: google-coral's
``mobilenet_v2_1.0_224_quant.tflite`` (uint8 weights, Apache-2.0). What the conversion does:

- **Dequantise**: real = scale * (q - zero_point), per tensor or per output channel;
  int32 biases have zero point 0 and scale = input scale * weight scale (TFLite's rule).
- **Fused BatchNorm**: TFLite folded each BN into its conv (weight and bias). torchvision has
  a bias-free conv + BN, so the BN becomes the identity plus the bias:
  gamma = 1, beta = bias, mean = 0, var = 1 - eps (so sqrt(var + eps) = 1 exactly).
- **Input convention**: the TF model reads (x - 128) / 128; the project feeds torchvision's
  ImageNet normalisation everywhere (``runtime.preprocess.to_input_tensor``). The difference is a
  per-channel affine map, folded into the first conv (weights scaled, constant into the bias),
  so the result is a drop-in torchvision state_dict. Exact except at the image border, where
  torch's zero padding means the ImageNet mean colour instead of TF's mid-grey.
- **'SAME' padding**: TF pads stride-2 convs on even inputs by (0, 1), torchvision by (1, 1).
  The shifted sampling grid compounds over the five stride-2 layers (31 input pixels at the
  last stage) and measurably hurts the converted weights (docs/imagenet_init.md), so
  ``use_tf_same_padding`` gives a network TF's padding without changing its state_dict
  (``ModelConfig.padding: tf-same``).
- **Classes**: 1001 outputs with "background" at 0; torchvision has the 1000 ImageNet classes,
  so row 0 of the classifier is dropped.

Conversion takes about a second; ``coral_state_dict`` caches the result under
``~/.cache/structvpr`` keyed by the source file's sha256 (written atomically).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from structvpr_core.io_utils import atomic_write_bytes, file_sha256
from structvpr_core.paths import shared_dir
from structvpr_core.runtime.tflite import load_tflite

CORAL_MOBILENETV2 = Path("models") / "mobilenet_v2_coral" / "mobilenet_v2_1.0_224_quant.tflite"
# (x - 128) / 128: the uint8 input quantisation of the coral model (scale 1/128, zero point 128).
TF_INPUT_SCALE, TF_INPUT_OFFSET = 1.0 / 128.0, 128.0
# torchvision's ImageNet input statistics (same as runtime.encoder; repeated here to keep the
# models package free of the runtime import).
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float64)
TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float64)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "structvpr"


def coral_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """torchvision mobilenet_v2 state_dict converted from ``path`` (default: the shared coral file)."""
    path = Path(path) if path is not None else shared_dir() / CORAL_MOBILENETV2
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 TFLite file not found: {path} (set STRUCTVPR_SHARED or pass a path)")
    cached = cache_dir() / f"mobilenet_v2_tflite_{file_sha256(path)[:16]}.pth"
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    state = convert_tflite_mobilenetv2(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(cached, buffer.getvalue())
    return state


def convert_tflite_mobilenetv2(path: Path) -> dict[str, torch.Tensor]:
    """Read every conv of the TFLite graph in execution order into torchvision's layout."""
    interpreter = load_tflite(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]

    reference = torchvision.models.mobilenet_v2(weights=None)
    targets = _conv_targets(reference)
    if len(convs) != len(targets):
        raise ValueError(f"{path}: {len(convs)} conv layers, a MobileNetV2 1.0 has {len(targets)}; not this network")
    state = {}
    for op, (conv_name, bn_name) in zip(convs, targets):
        weight = _dequantise(interpreter, tensors[op["inputs"][1]])
        # TFLite layouts: conv (out, kh, kw, in); depthwise (1, kh, kw, channels).
        perm = (3, 0, 1, 2) if op["op_name"] == "DEPTHWISE_CONV_2D" else (0, 3, 1, 2)
        weight = weight.transpose(perm)
        bias = _dequantise(interpreter, tensors[op["inputs"][2]])
        if bn_name is None:  # the classifier: a 1x1 conv in TF, a Linear in torchvision
            weight, bias = weight[1:, :, 0, 0], bias[1:]  # drop the "background" class
        elif conv_name == "features.0.0.weight":
            weight, bias = _fold_input_normalisation(weight, bias)
        state[conv_name] = weight
        if bn_name is None:
            state[conv_name.replace("weight", "bias")] = bias
        else:
            state.update(_identity_bn(bn_name, bias, reference.get_submodule(bn_name).eps))
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    for name, value in reference.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = value.clone()
    reference.load_state_dict(state)  # strict: every shape and name must match
    return state


def _conv_targets(model: nn.Module) -> list[tuple[str, str | None]]:
    """(conv weight name, its BatchNorm's module name) in forward order; the Linear has no BN."""
    targets, pending = [], None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pending = f"{name}.weight"
        elif isinstance(module, nn.BatchNorm2d):
            targets.append((pending, name))
        elif isinstance(module, nn.Linear):
            targets.append((f"{name}.weight", None))
    return targets


def _dequantise(interpreter, tensor: dict) -> np.ndarray:
    raw = interpreter.get_tensor(tensor["index"])
    q = tensor["quantization_parameters"]
    if raw.dtype == np.float32 or q["scales"].size == 0:
        return raw.astype(np.float64)
    scale, zero = q["scales"].astype(np.float64), q["zero_points"].astype(np.float64)
    if scale.size > 1:  # per channel along quantized_dimension
        shape = [1] * raw.ndim
        shape[q["quantized_dimension"]] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale * (raw.astype(np.float64) - zero)


def _fold_input_normalisation(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make the first conv read torchvision-normalised input instead of (x - 128) / 128.

    x = 255 * (std * x_tv + mean), so (x - 128) / 128 = a * x_tv + b per channel.
    """
    a = 255.0 * TF_INPUT_SCALE * TORCHVISION_STD
    b = (255.0 * TORCHVISION_MEAN - TF_INPUT_OFFSET) * TF_INPUT_SCALE
    return weight * a.reshape(1, 3, 1, 1), bias + (weight * b.reshape(1, 3, 1, 1)).sum(axis=(1, 2, 3))


def _identity_bn(name: str, bias: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    return {
        f"{name}.weight": np.ones_like(bias),
        f"{name}.bias": bias,
        f"{name}.running_mean": np.zeros_like(bias),
        f"{name}.running_var": np.full_like(bias, 1.0 - eps),
    }


def use_tf_same_padding(model: nn.Module) -> None:
    """Give every strided conv of ``model`` TF's 'SAME' padding (extra row/column at the end).

    Done with a forward pre-hook, so parameter names and shapes stay torchvision's.
    Stride-1 convs are unaffected: TF 'SAME' is symmetric for them.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.padding = (0, 0)
            module.register_forward_pre_hook(_pad_same)


def _pad_same(conv: nn.Conv2d, args: tuple) -> tuple:
    x = args[0]
    pads = []
    for size, k, s, d in zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation):
        # ceil(size / s) as (size + s - 1) // s: under ONNX export the shapes are traced and
        # ONNX integer division truncates, so the -(-size // s) idiom would floor instead (wrong pads)
        total = max(((size + s - 1) // s - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (F.pad(x, (left, right, top, bottom)),)
