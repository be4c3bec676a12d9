"""Backend ``openvino``: Intel's OpenVINO runtime on the CPU, from a model converted on first use.

Sources it accepts:

- a sentence-transformers or transformers directory: exported to ONNX, converted to
  OpenVINO's format and, for ``precision = "int8"``, quantised after training by NNCF
  (weights and activations in int8, calibrated on a fixed text set kept apart from the
  check sample); once, in a subprocess (:mod:`hotswapd.backends.openvino_export`), checked
  against sentence-transformers like the ONNX export and cached under the cache dir, keyed
  by the source's fingerprint, the precision, the library versions and, for the precisions
  whose accuracy depends on the instruction set, the CPU;
- a directory holding ``openvino_model.xml`` (optimum-intel's layout): served as it is.

``precision``: ``fp32``; ``bf16`` (the runtime computes in bfloat16; on CPUs with
AVX-512 BF16 or AMX only, refused elsewhere); ``int8``. Pooling, normalisation and
truncation follow the directory's sentence-transformers config, as for ONNX.

A rerank version (``task = "rerank"``) is a cross-encoder: :mod:`hotswapd.backends.openvino_rerank`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from hotswapd.backends.support.devices import pick_device
from hotswapd.backends.support.export_cache import created_once, enforce
from hotswapd.backends.support.graph_embedder import GraphEmbedder
from hotswapd.backends.support.model_files import ModelLayout, read_layout
from hotswapd.backends.support.pooling import PoolingName, choose_mode
from hotswapd.backends.support.openvino_runtime import compiled_for_cpu, installed, unavailable
from hotswapd.backends.support.tokenizing import TextTokenizer
from hotswapd.host.cpu import cpu_identity
from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.backends import VersionSpec
    from hotswapd.backends.openvino_rerank import OpenVinoCrossEncoder

log = logging.getLogger(__name__)
GIVEN_FILE = "openvino_model.xml"
# Part of the conversion cache key: bump it when the converted model would differ.
CONVERSION_FORMAT = 1


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    # A conversion whose mean cosine against the torch model on the check sample falls
    # below this is refused.
    min_cosine: float = Field(default=0.99, ge=-1.0, le=1.0)
    # A rerank version's conversion (task = "rerank") whose document order per query agrees
    # less than this (Spearman, the worst check query) with the torch cross-encoder is refused.
    min_spearman: float = Field(default=0.95, ge=-1.0, le=1.0)
    pooling: PoolingName | None = None  # default: the model's own pooling config, else mean
    threads: PositiveInt | None = None  # default: OpenVINO's (one per core)


class OpenVinoEmbedder(GraphEmbedder):
    def __init__(self, compiled: Any, tokenizer: TextTokenizer, pooling: str, normalizes: bool, batch_size: int) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        # An infer request is not safe to share between threads (ONNX Runtime's session
        # is); the daemon runs one batch at a time, but a standalone user may not.
        self._lock = threading.Lock()
        names = {name for port in compiled.inputs for name in port.get_names()}
        super().__init__(tokenizer, names, pooling, normalizes, "cpu", batch_size)

    @classmethod
    def create(cls, xml: Path, layout: ModelLayout, pooling: str, *, precision: str, batch_size: int, threads: int | None) -> OpenVinoEmbedder:
        compiled = compiled_for_cpu(xml, precision, threads)
        return cls(compiled, TextTokenizer(layout.tokenizer_file, layout.max_seq_length), pooling, layout.normalizes, batch_size)

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            return self._request.infer(feeds)[self._output]  # type: ignore[no-any-return]  # a copy (share_outputs=False)

    def close(self) -> None:
        del self._request
        del self._compiled


def load(path: Path, version: VersionSpec) -> OpenVinoEmbedder | OpenVinoCrossEncoder:
    if getattr(version, "task", "embed") == "rerank":  # a cross-encoder's logits, not vectors
        from hotswapd.backends.openvino_rerank import load as load_cross_encoder

        return load_cross_encoder(path, version)
    options: Options = version.options  # type: ignore[assignment]
    pick_device(version.device, version.fallback, False, "openvino (this backend runs on the CPU)")
    reason = unavailable(options.precision)
    if reason is not None:
        raise ModelLoadError(f"backend 'openvino', precision {options.precision}: {reason}")
    if (path / GIVEN_FILE).is_file():
        weights = path / GIVEN_FILE.replace(".xml", ".bin")
        if weights.exists() and not weights.is_file():  # a FIFO or a device would hang the reader
            raise ModelLoadError(f"{weights} is not a regular file")
        xml, details = path / GIVEN_FILE, {"openvino_file": str(path / GIVEN_FILE)}
    else:
        xml, details = _converted(path, version, options)
    layout = read_layout(path)
    own_max_tokens = layout.max_seq_length
    if version.max_seq_length is not None:
        layout = ModelLayout(layout.root, layout.transformer_dir, layout.pooling, layout.normalizes, version.max_seq_length)
    pooling = choose_mode(options.pooling, layout.pooling)
    embedder = OpenVinoEmbedder.create(xml, layout, pooling, precision=options.precision, batch_size=version.batch_size, threads=options.threads)
    embedder.model_max_tokens = own_max_tokens  # the model's own limit (the fingerprint's normal form)
    embedder.details = {**details, "precision": options.precision}
    log.info("openvino: serving %s in %s (%s pooling, max %d tokens)", xml, options.precision, pooling, layout.max_seq_length)
    return embedder


def _converted(source: Path, version: VersionSpec, options: Options) -> tuple[Path, dict[str, Any]]:
    key = _cache_key(source, options.precision)
    arguments = ["--source", str(source), "--precision", options.precision]
    check = created_once(_cache_root(), key, "hotswapd.backends.openvino_export", arguments, version.trust_remote_code, ("model.xml", "model.bin"))
    enforce(check, options.min_cosine, f"the OpenVINO {options.precision} conversion of {source}")
    xml = _cache_root() / key / "model.xml"
    return xml, {"openvino_file": str(xml), "exported_now": check.get("exported_now", False), "check": check}


def _cache_root() -> Path:
    from hotswapd.host.paths import cache_dir

    return cache_dir() / "openvino"


def _cache_key(source: Path, precision: str) -> str:
    from hotswapd.sources.fingerprint import fingerprint

    libraries = [f"{name}={installed(name)}" for name in ("openvino", "nncf")]
    # bf16 and int8 accuracy (and int8 calibration) depend on the instructions the CPU has.
    cpu = cpu_identity() if precision != "fp32" else ""
    parts = [fingerprint(source), precision, *libraries, cpu, f"format{CONVERSION_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def import_libraries() -> None:
    """Import what load() needs, so the RSS measured around a load is the model's, not the libraries'."""
    try:
        import openvino  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        pass  # load() reports the missing package with an install hint
