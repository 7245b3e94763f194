"""Offline semantic segmentation: one image -> label map, or a folder -> label PNG cache.

Two teachers: ESPNet (torch; Cityscapes or CamVid weights) and DeepLabV3-MobileNetV2 ADE20K
(TFLite, the paper's label space; ``segmentation/deeplab_ade20k.py``).

``Segmenter.predict`` turns an RGB uint8 image into a uint8 class map of the same
size. ``structvpr segment`` runs it over an image folder and writes one label PNG per
image at the same relative path; a ``segmentation.yaml`` in the output folder records
which weights, label set and inference size made the cache, so a cache made with
other settings is refused instead of silently mixed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from tqdm import tqdm  # tqdm.write: a message that leaves a bar intact

from structvpr_core.arguments import CliError, parse_size
from structvpr_core.config import ConfigError, to_dict
from structvpr_core.segmentation.deeplab_ade20k import DeepLabADE20K, default_weights
from structvpr_core.segmentation.espnet import load_espnet
from structvpr_core.segmentation.slme import load_table
from structvpr_core.io_utils import atomic_write_bytes, atomic_write_text, file_sha256
from structvpr_core.progress import progress
from structvpr_core.runtime.threads import set_compute_threads

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_META_NAME = "segmentation.yaml"
CACHE_FORMAT = "structvpr-segmentation/1"


@dataclass(frozen=True)
class LabelSet:
    """What a set of weights was trained on: classes, colours, input statistics, input size.

    The last class is the dataset's void/unlabelled class (the networks have an output for it).
    ``mean_bgr``/``std_bgr`` are per-channel training-set statistics on the 0..255 scale.
    """

    name: str
    class_names: tuple[str, ...]
    palette_rgb: tuple[tuple[int, int, int], ...]
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]
    native_size: tuple[int, int]  # (W, H) the weights were trained/evaluated at
    stats_source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def void_label(self) -> int:
        return self.num_classes - 1

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """HxW class map -> HxWx3 RGB image in this label set's colours."""
        return np.asarray(self.palette_rgb, dtype=np.uint8)[labels]


def _pascal_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map (bit-interleaved label id), as DeepLab's tools draw labels."""
    colours = []
    for label in range(n):
        r = g = b = 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        colours.append((r, g, b))
    return tuple(colours)


LABEL_SETS: dict[str, LabelSet] = {
    "cityscapes": LabelSet(
        name="cityscapes",
        class_names=(
            "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
            "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
            "truck", "bus", "train", "motorcycle", "bicycle", "void",
        ),
        palette_rgb=(
            (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
            (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
            (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
            (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 0),
        ),
        mean_bgr=(72.3923111, 82.90893555, 73.15840149),
        std_bgr=(45.3192215, 46.15289307, 44.91483307),
        native_size=(1024, 512),
        stats_source="sacmehta/ESPNet test/VisualizeResults.py (Cityscapes train set)",
    ),
    # The CamVid weights were trained with CamVid training-set statistics that the
    # ESPNet repository does not publish; with the Cityscapes ones they score ~18% mIoU
    # instead of ~59% (docs/segmentation.md). These are the CamVid (SegNet split,
    # train+val) pixel statistics published in ZJULearning/RMI
    # dataloaders/datasets/camvid.py: RGB mean 100/103/106, std 75.61/77.81/76.70.
    "camvid": LabelSet(
        name="camvid",
        class_names=(
            "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
            "Car", "Pedestrian", "Bicyclist", "Unlabelled",
        ),
        palette_rgb=(
            (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
            (0, 128, 192), (0, 0, 0),
        ),
        mean_bgr=(106.0, 103.0, 100.0),
        std_bgr=(76.70, 77.81, 75.61),
        native_size=(480, 360),
        stats_source="ZJULearning/RMI dataloaders/datasets/camvid.py (CamVid train+val)",
    ),
    # The network's "other/unlabelled" output (channel 0) is stored last, as void, like the
    # ESPNet label sets; class ids are the SLME table's (labels.txt line k = id k - 1).
    "ade20k": LabelSet(
        name="ade20k",
        class_names=(*load_table("ade20k").classes, "other"),
        palette_rgb=(*_pascal_palette(151)[1:], (0, 0, 0)),
        mean_bgr=(127.5, 127.5, 127.5),
        std_bgr=(127.5, 127.5, 127.5),
        native_size=(513, 513),
        stats_source="TF DeepLab / TF-Hub lite-model input convention: x / 127.5 - 1",
    ),
}
SEGMENTERS = ("espnet", "deeplab-ade20k")


@dataclass
class SegmenterConfig:
    weights: Path | None = None  # ESPNet: required; deeplab-ade20k: default the shared TFLite file
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    size: tuple[int, int] | None = None  # inference (W, H); None = the label set's native size
    dataset: str | None = None  # a LABEL_SETS key; None = inferred from the number of classes
    segmenter: str = "espnet"  # one of SEGMENTERS
    threads: int | None = None  # CPU threads for the TFLite runtime (ESPNet: set torch's instead)

    def __post_init__(self) -> None:
        if self.segmenter not in SEGMENTERS:
            raise ConfigError(f"segmenter: {self.segmenter!r} is not one of {list(SEGMENTERS)}")
        if self.segmenter == "deeplab-ade20k":
            self.weights = self.weights or default_weights()
            if self.device != "cpu" or self.size is not None or self.dataset not in (None, "ade20k"):
                raise ConfigError("deeplab-ade20k runs on the CPU at its fixed 513x513 input with ADE20K "
                                  "labels: drop --device, --size and --dataset")
        if self.weights is None:
            raise ConfigError("weights: the ESPNet segmenter needs a weights file (.pth)")
        self.weights = Path(self.weights)
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device: expected 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.size is not None:
            if len(self.size) != 2:
                raise ConfigError(f"size: expected (width, height), got {self.size!r}")
            w, h = self.size
            if w <= 0 or h <= 0 or w % 8 or h % 8:
                raise ConfigError(f"size: width and height must be positive multiples of 8, got {w}x{h}")
            self.size = (int(w), int(h))
        if self.dataset is not None and self.dataset not in LABEL_SETS:
            raise ConfigError(f"dataset: {self.dataset!r} is not one of {sorted(LABEL_SETS)}")


class Segmenter:
    """Label maps for RGB images (any size; resized to the inference size and back)."""

    def __init__(self, config: SegmenterConfig):
        self.weights = config.weights
        if config.segmenter == "deeplab-ade20k":
            self.deeplab = DeepLabADE20K(config.weights, config.threads)
            self.label_set = LABEL_SETS["ade20k"]
            self.size = self.label_set.native_size
            return
        self.deeplab = None
        model, num_classes = load_espnet(config.weights)
        self.label_set = _label_set_for(num_classes, config.dataset, config.weights)
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {config.device!r} requested but CUDA is not available")
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.size = config.size or self.label_set.native_size

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 -> uint8 HxW class ids of ``self.label_set``."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            desc = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise ValueError(f"Segmenter.predict expects an RGB uint8 HxWx3 array, got {desc}")
        if self.deeplab is not None:
            return self.deeplab(rgb)
        h, w = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.float32)
        # The original code normalises, then resizes bilinearly; both are per-pixel affine
        # maps with weights summing to 1, so resizing first gives the same input, cheaper.
        if (w, h) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_LINEAR)
        # Not the usual (x/255 - mean)/std: the original divides by 255 after standardising.
        mean = np.asarray(self.label_set.mean_bgr, dtype=np.float32)
        std = np.asarray(self.label_set.std_bgr, dtype=np.float32)
        net_in = (bgr - mean) / std / 255.0
        x = torch.from_numpy(net_in.transpose(2, 0, 1)).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            labels = self.model(x)[0].argmax(0).to(torch.uint8).cpu().numpy()
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        return labels


def _label_set_for(num_classes: int, dataset: str | None, weights: Path) -> LabelSet:
    if dataset is not None:
        label_set = LABEL_SETS[dataset]
        if label_set.num_classes != num_classes:
            raise ValueError(
                f"{weights}: has {num_classes} outputs but dataset '{dataset}' has "
                f"{label_set.num_classes} classes"
            )
        return label_set
    matches = [ls for ls in LABEL_SETS.values() if ls.num_classes == num_classes]
    if len(matches) != 1:
        raise ValueError(
            f"{weights}: cannot infer the label set from {num_classes} outputs; "
            f"pass dataset= one of {sorted(LABEL_SETS)}"
        )
    return matches[0]

# ---------------------------------------------------------------- CLI: structvpr segment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="espnet",
                        help="espnet (Cityscapes/CamVid labels) or deeplab-ade20k (ADE20K, the paper's label space)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="ESPNet state_dict (.pth, required for espnet); deeplab-ade20k: the .tflite file "
                             "(default: the one in the shared models folder)")
    parser.add_argument("--input", required=True, type=Path, help="image folder (png/jpg, searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="label PNG folder (same relative paths)")
    parser.add_argument("--size", default=None, metavar="WxH",
                        help="inference size, multiples of 8 (default: the weights' native size)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dataset", choices=sorted(LABEL_SETS), default=None,
                        help="label set of the weights (default: inferred from the number of classes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the runtime's choice; 1 is often faster on a busy machine)")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be at least 1, got {args.threads}")
    config = SegmenterConfig(weights=args.weights, device=args.device, size=parse_size(args.size),
                             dataset=args.dataset, segmenter=args.segmenter, threads=args.threads)
    if args.threads is not None:
        set_compute_threads(args.threads)
    if not args.input.is_dir():
        raise FileNotFoundError(f"input folder not found: {args.input}")
    jobs = _plan_outputs(args.input, args.output)
    segmenter = Segmenter(config)
    _claim_cache(args.output, _cache_meta(segmenter))

    done = skipped = 0
    failed: list[Path] = []
    for image_path, label_path in progress(jobs, desc="segment", unit="img"):
        if label_path.exists():
            skipped += 1  # written atomically, so an existing file is complete
            continue
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            tqdm.write(f"structvpr segment: cannot read image (corrupt or not an image), skipped: {image_path}",
                       file=sys.stderr)
            failed.append(image_path)
            continue
        labels = segmenter.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ok, png = cv2.imencode(".png", labels)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {label_path}")
        atomic_write_bytes(label_path, png.tobytes())
        done += 1

    print(f"segmented {done}, already done {skipped}, failed {len(failed)} -> {args.output}")
    if failed:
        print(f"structvpr segment: {len(failed)} image(s) could not be read; first: {failed[0]}", file=sys.stderr)
        return 1
    return 0


def _plan_outputs(input_dir: Path, output_dir: Path) -> list[tuple[Path, Path]]:
    """(image, label PNG) pairs; label = output_dir / same relative path with .png."""
    input_dir, output_dir = input_dir.resolve(), output_dir.resolve()
    if input_dir.is_relative_to(output_dir):
        raise CliError(f"--output {output_dir} must not be the input folder or contain it")
    images = sorted(
        p for p in input_dir.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_relative_to(output_dir)
    )
    if not images:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images found under {input_dir}")
    jobs, source_of = [], {}
    for image in images:
        label = output_dir / image.relative_to(input_dir).with_suffix(".png")
        if label in source_of:
            raise CliError(f"{source_of[label]} and {image} would both be written to {label}")
        source_of[label] = image
        jobs.append((image, label))
    return jobs


def _cache_meta(segmenter: Segmenter) -> dict:
    label_set = segmenter.label_set
    return {
        "format": CACHE_FORMAT,
        "weights_file": segmenter.weights.name,
        "weights_sha256": file_sha256(segmenter.weights),
        "label_set": label_set.name,
        "class_names": list(label_set.class_names),
        "void_label": label_set.void_label,
        "size": list(segmenter.size),
        "input_stats_bgr": {"mean": list(label_set.mean_bgr), "std": list(label_set.std_bgr)},
    }


# Settings that change the label maps; a cache is reused only if all of them agree.
_CACHE_KEYS = ("format", "weights_sha256", "label_set", "size", "input_stats_bgr")


def _claim_cache(output_dir: Path, meta: dict) -> None:
    """Write ``segmentation.yaml`` for a new cache, or check an existing cache matches ``meta``."""
    meta_path = output_dir / CACHE_META_NAME
    if meta_path.exists():
        try:
            old = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise CliError(f"{meta_path}: unreadable cache description ({e})") from None
        if not isinstance(old, dict):
            raise CliError(f"{meta_path}: not a segmentation cache description")
        differ = [k for k in _CACHE_KEYS if to_dict(old.get(k)) != to_dict(meta[k])]
        if differ:
            details = "; ".join(f"{k}: cache {old.get(k)!r}, now {meta[k]!r}" for k in differ)
            raise CliError(
                f"{output_dir} holds labels made with other settings ({details}); "
                "use another --output folder or delete this one"
            )
        return
    if output_dir.is_dir() and any(output_dir.rglob("*.png")):
        raise CliError(
            f"{output_dir} already holds PNG files but no {CACHE_META_NAME}, so their origin is unknown; "
            "use an empty --output folder"
        )
    atomic_write_text(meta_path, yaml.safe_dump(meta, sort_keys=False))

