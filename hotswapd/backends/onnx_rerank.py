"""Rerank versions on ONNX Runtime (``task = "rerank"`` with backend ``onnx``): a
cross-encoder exported to ONNX once (fp32, or quantised to int8), cached, and checked
against sentence-transformers' CrossEncoder before it may serve (the ranks it gives each
query's documents must agree: Spearman >= ``min_spearman``).

Pairs are tokenised and fed as the OpenVINO rerank backend does
(:class:`hotswapd.backends.support.graph_cross_encoder.GraphCrossEncoder`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.backends.support.export_cache import OPSET, created_once
from hotswapd.backends.support.graph_cross_encoder import GraphCrossEncoder, pair_length, refuse_disordered, usable_tokenizer
from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)
EXPORT_MODULE = "hotswapd.backends.cross_encoder_export"
EXPORT_FORMAT = 1  # bump when the exported graph would differ


class OnnxCrossEncoder(GraphCrossEncoder):
    def __init__(self, session: Any, tokenizer_file: Path, max_length: int, device: str, batch_size: int) -> None:
        self._session = session
        super().__init__({item.name for item in session.get_inputs()}, tokenizer_file, max_length, device, batch_size)

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(["logits"], feeds)[0]  # type: ignore[no-any-return]

    def close(self) -> None:
        del self._session


def load(path: Path, version: VersionSpec) -> OnnxCrossEncoder:
    import onnxruntime

    options: Any = version.options
    if not path.is_dir():
        raise ModelLoadError(f"{path}: a rerank version on onnx exports a cross-encoder directory (a given .onnx file is not supported yet)")
    usable_tokenizer(path / "tokenizer.json")  # before a conversion, not after it
    length = pair_length(path, version.max_seq_length)
    key = _cache_key(path, options.quantize)
    check = created_once(_cache_root(), key, EXPORT_MODULE, ["--source", str(path), "--quantize", options.quantize], version.trust_remote_code, ("model.onnx",), kind="ranks")
    refuse_disordered(check, options.min_spearman, f"the {options.quantize if options.quantize != 'none' else 'fp32'} ONNX export of {path}")
    session_options = onnxruntime.SessionOptions()
    session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.inter_op_num_threads = 1
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin_wait else "0")
    if options.intra_op_threads:
        session_options.intra_op_num_threads = options.intra_op_threads
    file = _cache_root() / key / "model.onnx"
    try:
        session = onnxruntime.InferenceSession(str(file), session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
        raise ModelLoadError(f"ONNX Runtime cannot load {file}: {exc}") from exc
    scorer = OnnxCrossEncoder(session, path / "tokenizer.json", length, "cpu", version.batch_size)
    scorer.details = {"onnx_file": str(file), "exported_now": check.get("exported_now", False), "check": check}
    scorer.precision = "int8" if options.quantize == "int8" else "fp32"  # type: ignore[attr-defined]
    log.info("onnx: serving the cross-encoder %s (%s)", file, options.quantize)
    return scorer


def _cache_root() -> Path:
    from hotswapd.host.paths import cache_dir

    return cache_dir() / "onnx"


def _cache_key(source: Path, quantize: str) -> str:
    from hotswapd.sources.fingerprint import fingerprint

    parts = [fingerprint(source), f"rerank-{quantize}", f"opset{OPSET}", f"rerank-format{EXPORT_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
