"""Check the offline ImageNet start (coral MobileNetV2 TFLite, dequantised into torchvision's layout).

(a) Top-1 agreement of our torch network with the original TFLite model (run by ai-edge-litert)
    on real photos from ../shared/data (CamVid, Gardens Point, GRIEF), with TF's 'SAME'
    padding (ModelConfig.padding: tf-same) and with torchvision's.
(b) Place recognition on Gardens Point (day_left -> day_right: viewpoint; day_right ->
    night_right: day/night), R@1 soft (+-2 frames) and hard, for raw pixels, random init and
    the ImageNet start (both paddings), MC descriptor (448-d), no training.

Usage: .venv/bin/python scripts/verify_imagenet_init.py --out /tmp/imagenet_init.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from structvpr_core.data.images import read_rgb  # noqa: E402
from structvpr_core.io_utils import atomic_write_text  # noqa: E402
from structvpr_core.models.branches import ModelConfig, RGBBranch  # noqa: E402
from structvpr_core.models.tflite_mobilenetv2 import (  # noqa: E402
    CORAL_MOBILENETV2, coral_state_dict, use_tf_same_padding,
)
from structvpr_core.paths import shared_dir  # noqa: E402
from structvpr_core.runtime.encoder import Encoder, TorchEncoder, load_encoder, to_input_tensor  # noqa: E402
from structvpr_core.runtime.tflite import load_tflite  # noqa: E402

PAIRS = (("day_left", "day_right"), ("day_right", "night_right"))


def photos(step: int = 1) -> list[Path]:
    data = shared_dir() / "data"
    return (sorted((data / "camvid_sample" / "images").glob("*.png"))[::step]
            + sorted((data / "gardenspoint" / "day_left").glob("*.jpg"))[::10 * step]
            + sorted((data / "grief_seasons" / "michigan" / "images").glob("*.jpg"))[::3 * step])


def imagenet_classifier(padding: str) -> torch.nn.Module:
    """torchvision MobileNetV2 with the converted coral weights (strict), eval mode."""
    net = torchvision.models.mobilenet_v2(weights=None)
    net.load_state_dict(coral_state_dict())
    if padding == "tf-same":
        use_tf_same_padding(net)
    return net.eval()


def top1_agreement(nets: dict[str, torch.nn.Module], files: list[Path]) -> dict[str, int]:
    """How many of ``files`` each net classifies like the TFLite original (224x224 input)."""
    tflite = load_tflite(shared_dir() / CORAL_MOBILENETV2)
    agree = dict.fromkeys(nets, 0)
    for path in files:
        small = cv2.resize(read_rgb(path), (224, 224), interpolation=cv2.INTER_AREA)
        tflite.set_tensor(tflite.get_input_details()[0]["index"], small[None])
        tflite.invoke()
        reference = int(tflite.get_tensor(tflite.get_output_details()[0]["index"])[0].argmax())
        x = to_input_tensor([small], (224, 224))
        for name, net in nets.items():
            with torch.no_grad():
                agree[name] += reference == int(net(x)[0].argmax()) + 1  # TFLite class 0 = background
    return agree


def gardenspoint_recall(encoder: Encoder, db: str, query: str, frames) -> tuple[float, float]:
    """R@1 (soft: +-2 frames, hard: exact) of ``query`` frames against ``db`` frames."""
    root = shared_dir() / "data" / "gardenspoint"
    frames = np.asarray(list(frames))
    d = encoder.encode([read_rgb(root / db / f"Image{i:03d}.jpg") for i in frames])
    q = encoder.encode([read_rgb(root / query / f"Image{i:03d}.jpg") for i in frames])
    error = np.abs(frames[(q @ d.T).argmax(1)] - frames)
    return float(np.mean(error <= 2)), float(np.mean(error == 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--size", default="320x240", help="encoder input WxH for (b) (default 320x240)")
    parser.add_argument("--frame-step", type=int, default=2, help="use every Nth Gardens Point frame (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    files = photos()
    agree = top1_agreement({p: imagenet_classifier(p) for p in ("tf-same", "torch")}, files)
    print(f"(a) top-1 agreement with the TFLite original on {len(files)} real photos: "
          + ", ".join(f"padding {k}: {v}/{len(files)}" for k, v in agree.items()))

    torch_padded = RGBBranch(ModelConfig("rgb", size))
    torch_padded.load_state_dict(load_encoder("imagenet-mobilenetv2", "cpu", size).model.state_dict())
    encoders = {
        "raw-pixel": load_encoder("raw-pixel"),
        "random-mobilenetv2": load_encoder("random-mobilenetv2", "cpu", size),
        "imagenet-mobilenetv2 (coral, tf-same)": load_encoder("imagenet-mobilenetv2", "cpu", size),
        "same weights, torchvision padding": TorchEncoder(torch_padded, "coral-torch-padding", "cpu", size),
    }
    frames = range(0, 200, args.frame_step)
    recall = {name: {f"{db}->{q}": gardenspoint_recall(enc, db, q, frames) for db, q in PAIRS}
              for name, enc in encoders.items()}
    print(f"\n(b) Gardens Point R@1 soft (+-2) / hard, {len(frames)} frames, input {size[0]}x{size[1]}")
    print(f"  {'model':<40}" + "".join(f"{db + '->' + q:>26}" for db, q in PAIRS))
    for name, row in recall.items():
        print(f"  {name:<40}" + "".join(f"{100 * s:>17.1f} / {100 * h:4.1f}" for s, h in row.values()))
    results = {"photos": len(files), "top1_agreement": agree, "size": list(size), "frames": len(frames),
               "gardenspoint_r1_soft_hard": recall, "torch_threads": 1}
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
