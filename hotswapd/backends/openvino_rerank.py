"""Rerank versions on OpenVINO (``task = "rerank"`` with backend ``openvino``): a
cross-encoder exported to ONNX, converted by OpenVINO once (fp32; bf16 computed by the
runtime; int8 quantised by NNCF on calibration pairs), cached, and checked against
sentence-transformers' CrossEncoder before it may serve (Spearman >= ``min_spearman`` on
each check query's document order).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.backends.support.devices import pick_device
from hotswapd.backends.support.export_cache import created_once
from hotswapd.backends.support.openvino_runtime import compiled_for_cpu, installed, unavailable
from hotswapd.backends.support.graph_cross_encoder import GraphCrossEncoder, pair_length, refuse_disordered, usable_tokenizer
from hotswapd.errors import ModelLoadError
from hotswapd.host.cpu import cpu_identity

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)
EXPORT_MODULE = "hotswapd.backends.cross_encoder_export"
CONVERSION_FORMAT = 1  # bump when the converted model would differ


class OpenVinoCrossEncoder(GraphCrossEncoder):
    def __init__(self, compiled: Any, tokenizer_file: Path, max_length: int, batch_size: int) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        self._lock = threading.Lock()  # an infer request is not safe to share between threads
        names = {name for port in compiled.inputs for name in port.get_names()}
        super().__init__(names, tokenizer_file, max_length, "cpu", batch_size)

    @classmethod
    def create(cls, xml: Path, tokenizer_file: Path, max_length: int, *, precision: str, batch_size: int, threads: int | None) -> OpenVinoCrossEncoder:
        return cls(compiled_for_cpu(xml, precision, threads), tokenizer_file, max_length, batch_size)

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            return self._request.infer(feeds)[self._output]  # type: ignore[no-any-return]

    def close(self) -> None:
        del self._request
        del self._compiled


def load(path: Path, version: VersionSpec) -> OpenVinoCrossEncoder:
    options: Any = version.options
    pick_device(version.device, version.fallback, False, "openvino (this backend runs on the CPU)")
    reason = unavailable(options.precision)
    if reason is not None:
        raise ModelLoadError(f"backend 'openvino', precision {options.precision}: {reason}")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: a rerank version on openvino converts a cross-encoder directory")
    usable_tokenizer(path / "tokenizer.json")  # before a conversion, not after it
    length = pair_length(path, version.max_seq_length)
    key = _cache_key(path, options.precision)
    arguments = ["--source", str(path), "--runtime", "openvino", "--precision", options.precision]
    check = created_once(_cache_root(), key, EXPORT_MODULE, arguments, version.trust_remote_code, ("model.xml", "model.bin"), kind="ranks")
    refuse_disordered(check, options.min_spearman, f"the OpenVINO {options.precision} conversion of {path}")
    xml = _cache_root() / key / "model.xml"
    scorer = OpenVinoCrossEncoder.create(
        xml, path / "tokenizer.json", length,
        precision=options.precision, batch_size=version.batch_size, threads=options.threads,
    )
    scorer.details = {"openvino_file": str(xml), "exported_now": check.get("exported_now", False), "check": check, "precision": options.precision}
    scorer.precision = options.precision  # type: ignore[attr-defined]
    log.info("openvino: serving the cross-encoder %s (%s)", xml, options.precision)
    return scorer


def _cache_root() -> Path:
    from hotswapd.host.paths import cache_dir

    return cache_dir() / "openvino"


def _cache_key(source: Path, precision: str) -> str:
    from hotswapd.sources.fingerprint import fingerprint

    libraries = [f"{name}={installed(name)}" for name in ("openvino", "nncf")]
    cpu = cpu_identity() if precision != "fp32" else ""  # bf16/int8 accuracy depends on the instructions
    parts = [fingerprint(source), f"rerank-{precision}", *libraries, cpu, f"rerank-format{CONVERSION_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]
