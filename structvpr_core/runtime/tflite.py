"""TFLite models on CPU with ai-edge-litert (the ImageNet-start converter and the ADE20K teacher)."""

from __future__ import annotations

from pathlib import Path


def load_tflite(path: str | Path, threads: int | None = None):
    """An allocated ai-edge-litert ``Interpreter`` for ``path``; clear errors for a missing package or bad file."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError("reading .tflite files needs the 'ai-edge-litert' package (pip install ai-edge-litert)") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    except ValueError as e:
        raise ValueError(f"{path}: not a readable TFLite model ({e})") from None
    interpreter.allocate_tensors()
    return interpreter
