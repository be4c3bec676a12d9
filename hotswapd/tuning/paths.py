"""The ways of running one model that a tuning compares, and whether this machine can run each.

A path is a backend with the options that select its precision. ``torch`` stands for the
backend that reads the model directory the way it is laid out: sentence-transformers when
it has a ``modules.json``, plain transformers otherwise.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

PATHS: dict[str, tuple[str, dict[str, str]]] = {
    "torch-fp32": ("torch", {}),
    "torch-bf16": ("torch", {"precision": "bf16"}),
    "torch-fp16": ("torch", {"precision": "fp16"}),
    "onnx-fp32": ("onnx", {}),
    "onnx-int8": ("onnx", {"quantize": "int8"}),
    "openvino-fp32": ("openvino", {}),
    "openvino-bf16": ("openvino", {"precision": "bf16"}),
    "openvino-int8": ("openvino", {"precision": "int8"}),
}
REFERENCE = "torch-fp32"  # what every other path's vectors are compared with


def torch_backend(path: Path) -> str:
    return "sentence-transformers" if (path / "modules.json").is_file() else "transformers"


def backend_and_options(name: str, path: Path) -> tuple[str, dict[str, str]]:
    backend, options = PATHS[name]
    return (torch_backend(path) if backend == "torch" else backend), dict(options)


def unavailable(name: str, device: str) -> str | None:
    """Why ``name`` cannot run here on ``device`` (a missing library, missing instructions,
    no GPU), or None. Imports torch only to ask about a GPU."""
    from hotswapd.backends import openvino
    from hotswapd.backends.precision import why_not

    backend, options = PATHS[name]
    if backend == "torch":
        if find_spec("torch") is None or find_spec("sentence_transformers") is None:
            return "torch and sentence-transformers are not installed (pip install 'hotswap[sentence-transformers]')"
        return why_not(options.get("precision", "fp32"), device)
    if backend == "onnx":
        if find_spec("onnxruntime") is None or find_spec("onnx") is None:
            return "ONNX Runtime is not installed (pip install 'hotswap[onnx]')"
        if device.startswith("cuda") and options.get("quantize") == "int8":
            return "int8 ONNX runs on the CPU; this version runs on CUDA"
        return None
    if device.startswith("cuda"):
        return "OpenVINO runs on the CPU here; this version runs on CUDA"
    return openvino.unavailable(options.get("precision", "fp32"))
