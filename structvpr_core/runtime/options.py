"""Inference-path choices shared by the node config and the command-line tools (no torch import)."""

from __future__ import annotations

import argparse

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def add_inference_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                            precision: str = "auto") -> None:
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="network runtime (default auto: ONNX Runtime fp32 on a CPU, OpenVINO for "
                             "--precision bf16; torch on CUDA)")
    parser.add_argument("--precision", choices=PRECISIONS, default=precision,
                        help=f"fp32 | bf16 (CPUs with AVX512-BF16/AMX) | fp16 (CUDA); default {precision}")
