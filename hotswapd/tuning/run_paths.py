"""The ways of running one model that a tuning compares, and whether this machine can run each.

A path is a backend with the options that select its precision. ``torch`` stands for the
backend that reads the model directory the way it is laid out: sentence-transformers when
it has a ``modules.json``, plain transformers otherwise.
"""

from __future__ import annotations

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
