"""How a descriptor network runs: runtime (torch | ONNX Runtime | OpenVINO) x precision.

Works for any RGB module whose ``forward(x)`` maps (B, 3, H, W) to (B, dim).
``choose_path`` picks one for the device it runs on; ``make_runner`` builds it.

Measured on this project's 2-core AVX512-BF16 CPU, the default model at 640x480, batch 1,
1 thread, same run (benchmarks/encoder_latency.py; docs/benchmark_paths.md): torch fp32
124.6 ms, torch bf16 autocast 37.5, ONNX Runtime fp32 32.9, OpenVINO fp32 33.8, OpenVINO
bf16 18.2 (6.9x), ONNX Runtime int8 17.0. Accuracy (structvpr benchmark --runtime/--precision):
the fp32 runtimes give torch fp32's R@1 exactly; OpenVINO bf16 keeps the mean R@1 over the sets
within 1 point at every sequence length (cosine >= 0.999) but moves single sets by up to 1.9
points (nordland64 at L = 10; 1.0 on the mean for the whitened student); torch's autocast bf16
and int8 lose more. So ``auto`` on a CPU is ONNX Runtime fp32 (exact), else torch fp32;
``precision: bf16`` (CPUs with AVX512-BF16 or AMX) is OpenVINO bf16, the 1.9x faster path for
full-resolution input. On CUDA ``auto`` is torch fp16 autocast (not measured: no GPU was lent).
"""

from __future__ import annotations

import importlib.util
import io
import platform
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from structvpr_core.config import ConfigError
from structvpr_core.runtime.options import PRECISIONS, RUNTIMES
from structvpr_core.runtime.threads import compute_threads

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Exported graphs kept per input size: a camera gives one size, an evaluation over several
# image sets a few; each export costs ~1-3 s, each kept graph some MB.
MAX_EXPORTED_SIZES = 4


@dataclass(frozen=True)
class InferencePath:
    runtime: str  # torch | onnxruntime | openvino
    precision: str  # fp32 | bf16 | fp16

    def describe(self) -> str:
        return f"{self.runtime} {self.precision}"


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """The CPU has native bf16 dot products (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    if platform.system() != "Linux" or not cpuinfo.is_file():
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def onnxruntime_installed() -> bool:
    # exporting needs the onnx package as well as the runtime
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def openvino_installed() -> bool:
    # OpenVINO reads the same exported ONNX graph, so it needs onnx too
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


def choose_path(device: torch.device, runtime: str = "auto", precision: str = "auto") -> InferencePath:
    """The inference path for ``device``; ``ConfigError`` for a combination it cannot run."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {list(RUNTIMES)}, got '{runtime}'")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got '{precision}'")
    if device.type == "cuda":
        if runtime in ("onnxruntime", "openvino"):
            raise ConfigError(f"runtime '{runtime}' runs on the CPU only here; use runtime torch (or auto) on CUDA")
        return InferencePath("torch", "fp16" if precision == "auto" else precision)
    if precision == "fp16":
        raise ConfigError("precision 'fp16' needs CUDA; on a CPU use fp32 or bf16 (or auto)")
    if precision == "bf16" and not cpu_supports_bf16():
        raise ConfigError("precision 'bf16' needs a CPU with AVX512-BF16 or AMX (this one has neither): "
                          "use fp32 or auto")
    if runtime == "openvino":
        if not openvino_installed():
            raise ConfigError("runtime 'openvino' needs the openvino and onnx packages (requirements.txt)")
        return InferencePath("openvino", "fp32" if precision == "auto" else precision)
    if runtime == "onnxruntime":
        if precision == "bf16":
            raise ConfigError("runtime 'onnxruntime' runs fp32 here; bf16 is runtime openvino or torch")
        if not onnxruntime_installed():
            raise ConfigError("runtime 'onnxruntime' needs the onnxruntime and onnx packages (requirements.txt)")
        return InferencePath("onnxruntime", "fp32")
    if runtime == "auto":
        # measured (module docstring): ONNX Runtime fp32 is exact; bf16, when asked for, is fastest
        # in OpenVINO and closest to fp32 there
        if precision == "bf16" and openvino_installed():
            return InferencePath("openvino", "bf16")
        if precision in ("auto", "fp32") and onnxruntime_installed():
            return InferencePath("onnxruntime", "fp32")
    return InferencePath("torch", "fp32" if precision == "auto" else precision)


class TorchRunner:
    """Eager torch, channels_last, autocast for bf16 / fp16."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str):
        # channels_last: depthwise convs run faster in NHWC on CPU (and on tensor cores)
        self.model = model.eval().to(device, memory_format=torch.channels_last)
        self.device, self.dtype = device, _AUTOCAST_DTYPES.get(precision)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        x = x.to(self.device, memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.model(x)
        return out.float().cpu().numpy()


def export_onnx(model: torch.nn.Module, input_size: tuple[int, int]) -> bytes:
    """The module as an ONNX graph: input "image" (B, 3, H, W) fixed H x W, output "descriptor"."""
    w, h = input_size
    graph = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter
        # the TorchScript exporter: no onnxscript needed, handles any traceable module
        torch.onnx.export(model.eval().float().cpu(), (torch.zeros(1, 3, h, w),), graph, dynamo=False,
                          input_names=["image"], output_names=["descriptor"],
                          dynamic_axes={"image": {0: "batch"}, "descriptor": {0: "batch"}})
    return graph.getvalue()


def onnx_session(graph: bytes):
    """A CPU ONNX Runtime session using the thread count of structvpr_core.runtime.threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    threads = compute_threads() or torch.get_num_threads()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # spinning workers steal the core other processes (SLAM) need on a shared CPU
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only (initializer clean-up warnings otherwise)
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """An ONNX graph (``export_onnx``) run by ONNX Runtime on the CPU."""

    def __init__(self, graph: bytes):
        self.session = onnx_session(graph)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {"image": x.contiguous().numpy()})[0]


class OpenVinoRunner:
    """An ONNX graph (``export_onnx``) compiled by OpenVINO for the CPU, fp32 or bf16.

    bf16 here is OpenVINO's inference precision hint: convolutions in bf16 with fp32
    accumulation, and the layers it judges sensitive kept in fp32 (the descriptor stays closer
    to fp32 than torch's autocast does: benchmarks/README.md)."""

    def __init__(self, graph: bytes, precision: str):
        import openvino

        core = openvino.Core()
        threads = compute_threads() or torch.get_num_threads()
        self.compiled = core.compile_model(core.read_model(graph), "CPU", {
            "INFERENCE_PRECISION_HINT": {"bf16": "bf16", "fp32": "f32"}[precision],
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.request.infer({0: x.contiguous().numpy()})[0].copy()


class PerSizeRunner:
    """An exported runtime for inputs of any size: one ONNX export (fixed H x W, so each graph is
    optimised for its shape) per input size met, built on first use, the last
    ``MAX_EXPORTED_SIZES`` kept. The torch module stays the single source of the weights."""

    def __init__(self, model: torch.nn.Module, compile_graph):
        self.model, self.compile_graph = model, compile_graph
        self.runners: OrderedDict[tuple[int, int], object] = OrderedDict()

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        height, width = int(x.shape[2]), int(x.shape[3])
        runner = self.runners.get((width, height))
        if runner is None:
            runner = self.runners[(width, height)] = self.compile_graph(export_onnx(self.model, (width, height)))
            if len(self.runners) > MAX_EXPORTED_SIZES:
                self.runners.popitem(last=False)
        self.runners.move_to_end((width, height))
        return runner(x)


def make_runner(model: torch.nn.Module, path: InferencePath, device: torch.device):
    """A callable: normalised input tensor (B, 3, H, W) of any H x W -> float32 (B, dim) numpy descriptors."""
    if path.runtime == "onnxruntime":
        return PerSizeRunner(model, OnnxRunner)
    if path.runtime == "openvino":
        return PerSizeRunner(model, lambda graph: OpenVinoRunner(graph, path.precision))
    return TorchRunner(model, device, path.precision)
