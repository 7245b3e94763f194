"""A descriptor network as an ``Encoder``: preprocessing + the chosen inference path."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from structvpr_core.runtime.inference import choose_path, make_runner
from structvpr_core.runtime.input_rule import InputRule
from structvpr_core.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_input_tensor


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available")
    return torch.device(device)


class NetworkEncoder:
    """Any RGB module with ``forward(x) -> (B, dim)`` (trained student, random init, other trunks).

    ``input_rule``: how an image is sized for the network (``InputRule``, or a (W, H) tuple = a fixed
    size); default the module's own (``config.input_rule`` of StructVPR nets), required for a module
    that names none.
    ``input_rule.size``, when fixed, is also ``input_size`` (None for a pixel budget).

    ``runtime`` / ``precision``: see ``structvpr_core.runtime.inference`` ("auto": the
    fastest measured path that keeps fp32's recall).

    ``checkpoint`` / ``checkpoint_sha256``: the file the weights came from and its content hash
    (``load_encoder`` sets them; a map records the hash as the model's identity).
    """

    def __init__(self, model: torch.nn.Module, name: str, device: str = "auto",
                 input_rule: InputRule | tuple[int, int] | None = None, runtime: str = "auto", precision: str = "auto",
                 checkpoint=None, checkpoint_sha256: str | None = None):
        self.device = pick_device(device)
        if input_rule is None:
            input_rule = getattr(getattr(model, "config", None), "input_rule", None)
            if input_rule is None:
                raise ValueError(f"{name}: give input_rule, the module does not name its own")
        self.input_rule = input_rule if isinstance(input_rule, InputRule) else InputRule(size=tuple(input_rule))
        self.input_size = self.input_rule.size
        self.name = name
        self.checkpoint, self.checkpoint_sha256 = checkpoint, checkpoint_sha256
        # kept so a descriptor cache can key on the weights (evaluation/benchmark.py): two
        # checkpoints with one file name (runs/*/best.pt) must never share cached descriptors
        self.model = model
        # the trunk's input normalisation (Lite0: (x - 127) / 128); ImageNet's for other modules
        self.input_mean = getattr(model, "input_mean", IMAGENET_MEAN)
        self.input_std = getattr(model, "input_std", IMAGENET_STD)
        self.path = choose_path(self.device, runtime, precision)
        self._run = make_runner(model, self.path, self.device)
        # One warm-up pass: the first call builds kernels (~10x a normal call; the node's first
        # frame must not pay it) and tells the descriptor size of a module without ``dim``.
        # A pixel budget is warmed up at a 4:3 camera's size (an exported runtime builds the
        # graph of another size on its first image of that size).
        for scale in self.input_rule.scales:
            self.dim = int(self._run(self._zeros(*scale.size_for(640, 480))).shape[1])

    @staticmethod
    def _zeros(width: int, height: int) -> torch.Tensor:
        return torch.zeros(1, 3, height, width).to(memory_format=torch.channels_last)

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (N, dim), L2-normalised here in fp32: a bf16 / fp16 network's own
        normalisation leaves norms ~0.998, which the index rightly rejects.

        Images of different sizes may share a call: each group of one network input size runs
        as one batch. Multi-scale: the normalised descriptors of every scale, summed."""
        out = np.zeros((len(images), self.dim), np.float32)
        for scale in self.input_rule.scales:
            out += _normalised(self._encode_at(images, scale))
        return _normalised(out)

    def _encode_at(self, images: Sequence[np.ndarray], rule: InputRule) -> np.ndarray:
        sizes = [rule.size_for(img.shape[1], img.shape[0]) if img.ndim >= 2 else None for img in images]
        out = np.empty((len(images), self.dim), np.float32)
        for size in dict.fromkeys(sizes):
            rows = [i for i, s in enumerate(sizes) if s == size]
            batch = [images[i] for i in rows]
            out[rows] = self._run(to_input_tensor(batch, size or (1, 1), self.input_mean, self.input_std))
        return out


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
