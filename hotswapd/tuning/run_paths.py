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
REFERENCE = "torch-fp32"  # what every other path's vectors (or a reranker's scores) are compared with
# A cross-encoder runs in fp32 on torch here (sentence-transformers' CrossEncoder).
RERANK_PATHS = ("torch-fp32", "onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")
# The accuracy gate of a task: what a path's output is compared with fp32 by, and its default.
GATES = {"embed": ("min_cosine", 0.99), "rerank": ("min_spearman", 0.95)}


def paths_for(task: str) -> list[str]:
    return list(RERANK_PATHS) if task == "rerank" else list(PATHS)


def gate_options(task: str, backend: str, gate: float) -> dict[str, float]:
    """The chosen backend's own accuracy-gate key, set to the tuning's gate: a rerank
    version's conversion is gated by rank agreement (ONNX and OpenVINO; torch is the
    reference), an embedder's by cosine."""
    if task == "rerank":
        return {"min_spearman": gate} if backend in ("onnx", "openvino") else {}
    return {"min_cosine": gate}


def torch_backend(path: Path) -> str:
    return "sentence-transformers" if (path / "modules.json").is_file() else "transformers"


def backend_and_options(name: str, path: Path, task: str = "embed") -> tuple[str, dict[str, str]]:
    """The backend and options of path ``name``; a cross-encoder's torch path is always
    sentence-transformers' CrossEncoder."""
    backend, options = PATHS[name]
    if backend == "torch":
        backend = "sentence-transformers" if task == "rerank" else torch_backend(path)
    return backend, dict(options)
