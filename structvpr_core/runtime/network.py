"""A descriptor network as an ``Encoder``: preprocessing + the chosen inference path."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from structvpr_core.runtime.inference import choose_path, make_runner
from structvpr_core.runtime.preprocess import to_input_tensor


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available")
    return torch.device(device)


class NetworkEncoder:
    """Any RGB module with ``forward(x) -> (B, dim)`` (trained student, random init, other trunks).

    ``runtime`` / ``precision``: see ``structvpr_core.runtime.inference`` ("auto": the
    fastest measured path this machine has).
    """

    def __init__(self, model: torch.nn.Module, name: str, device: str = "auto",
                 input_size: tuple[int, int] | None = None, runtime: str = "auto", precision: str = "auto"):
        self.device = pick_device(device)
        self.input_size = tuple(input_size or model.config.input_size)
        self.name = name
        self.dim = model.dim
        self.path = choose_path(self.device, runtime, precision)
        self._run = make_runner(model, self.path, self.device, self.input_size)

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self._run(to_input_tensor(images, self.input_size))
