"""A descriptor network as an ``Encoder``: preprocessing + the chosen inference path."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from structvpr_core.runtime.inference import choose_path, make_runner
from structvpr_core.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_input_tensor


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available")
    return torch.device(device)


class NetworkEncoder:
    """Any RGB module with ``forward(x) -> (B, dim)`` (trained student, random init, other trunks).

    ``input_size`` (W, H): required unless the module has ``config.input_size`` (StructVPR nets).

    ``runtime`` / ``precision``: see ``structvpr_core.runtime.inference`` ("auto": the
    fastest measured path that keeps fp32's recall).
    """

    def __init__(self, model: torch.nn.Module, name: str, device: str = "auto",
                 input_size: tuple[int, int] | None = None, runtime: str = "auto", precision: str = "auto"):
        self.device = pick_device(device)
        if input_size is None and not hasattr(getattr(model, "config", None), "input_size"):
            raise ValueError(f"{name}: give input_size, the module does not name its own")
        self.input_size = tuple(input_size or model.config.input_size)
        self.name = name
        # kept so a descriptor cache can key on the weights (evaluation/benchmark.py): two
        # checkpoints with one file name (runs/*/best.pt) must never share cached descriptors
        self.model = model
        # the trunk's input normalisation (Lite0: (x - 127) / 128); ImageNet's for other modules
        self.input_mean = getattr(model, "input_mean", IMAGENET_MEAN)
        self.input_std = getattr(model, "input_std", IMAGENET_STD)
        self.path = choose_path(self.device, runtime, precision)
        self._run = make_runner(model, self.path, self.device, self.input_size)
        # One warm-up pass: the first call builds kernels (~10x a normal call; the node's first
        # frame must not pay it) and tells the descriptor size of a module without ``dim``.
        w, h = self.input_size
        self.dim = int(self._run(torch.zeros(1, 3, h, w).to(memory_format=torch.channels_last)).shape[1])

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (N, dim), L2-normalised here in fp32: a bf16 / fp16 network's own
        normalisation leaves norms ~0.998, which the index rightly rejects."""
        out = self._run(to_input_tensor(images, self.input_size, self.input_mean, self.input_std))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
