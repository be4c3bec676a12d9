"""Backend ``onnx``: ONNX Runtime, from a given ``.onnx`` file or exported on first use.

Sources it accepts:

- a directory with ``model.onnx`` (or the file named by ``file``) and a ``tokenizer.json``;
- a bare ``.onnx`` file, with ``tokenizer`` naming a model directory for the tokenizer
  and pooling (a source spelling, like ``source``);
- a sentence-transformers or transformers directory without an ONNX file: it is exported
  (and with ``quantize = "int8"`` quantised) once, checked against the torch model, and
  cached under the platformdirs cache dir, keyed by the source's fingerprint.

Pooling, normalisation and truncation follow the directory's sentence-transformers config,
so the vectors match sentence-transformers'.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from hotswapd.backends.support.devices import pick_device
from hotswapd.backends.support.export_cache import OPSET, created_once, enforce
from hotswapd.backends.support.graph_embedder import GraphEmbedder
from hotswapd.backends.support.model_files import ModelLayout, read_layout
from hotswapd.backends.support.pooling import PoolingName, choose_mode
from hotswapd.backends.support.tokenizing import TextTokenizer
from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    from hotswapd.backends.onnx_rerank import OnnxCrossEncoder
    import numpy as np
    import onnxruntime

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)
# Part of the export cache key: bump it when the exported graph would differ.
EXPORT_FORMAT = 1


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = "model.onnx"  # inside a source directory
    tokenizer: str | None = None  # a source spelling; default: the source directory
    quantize: Literal["none", "int8"] = "none"  # applies when the backend exports
    # An export (or a given file, when `reference` is set) whose mean cosine against the
    # torch model on the check sample falls below this is refused.
    min_cosine: float = Field(default=0.99, ge=-1.0, le=1.0)
    reference: str | None = None  # a sentence-transformers source to check a given file against
    pooling: PoolingName | None = None  # default: the model's own pooling config, else mean
    intra_op_threads: PositiveInt | None = None  # default: ONNX Runtime's (one per core)
    # ORT's worker threads busy-wait after each run by default. Measured on 2 cores, that
    # took the CPU from the processes using the daemon (an in-process model's single-text
    # p50 went from ~24 to ~94 ms beside an idle-spinning daemon); off unless asked for.
    spin_wait: bool = False
    # A rerank version's export (task = "rerank") whose document order per query agrees less
    # with torch's (Spearman, the minimum over the check's queries) is refused.
    min_spearman: float = Field(default=0.95, ge=-1.0, le=1.0)


class OnnxEmbedder(GraphEmbedder):
    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: TextTokenizer, pooling: str, normalizes: bool, device: str, batch_size: int) -> None:
        self._session = session
        self._run_options: onnxruntime.RunOptions | None = None
        super().__init__(tokenizer, {item.name for item in session.get_inputs()}, pooling, normalizes, device, batch_size)

    @classmethod
    def create(cls, file: Path, layout: ModelLayout, pooling: str, *, device: str, batch_size: int, threads: int | None, spin_wait: bool = False) -> OnnxEmbedder:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            session = onnxruntime.InferenceSession(str(file), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors on a bad file
            raise ModelLoadError(f"ONNX Runtime cannot load {file}: {exc}") from exc
        tokenizer = TextTokenizer(layout.tokenizer_file, layout.max_seq_length)
        return cls(session, tokenizer, pooling, layout.normalizes, device, batch_size)

    def _infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(["last_hidden_state"], feeds, self._run_options)[0]  # type: ignore[no-any-return]

    def release_memory(self) -> None:
        """Shrink ONNX Runtime's arena, which keeps what a burst's largest batch needed
        (all-MiniLM-L6-v2, batches of 32 texts of 256 tokens: 175 -> 623 MiB, and 603 after
        malloc_trim; with this, 150). Shrinkage happens at the end of a run that asks for it:
        one run of one short text here, so the batches themselves keep the arena's speed."""
        import onnxruntime

        shrink = onnxruntime.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "gpu:0" if self.device == "cuda" else "cpu:0")
        self._run_options = shrink
        try:
            self.encode(["."], normalize=False)
        finally:
            self._run_options = None

    def close(self) -> None:
        del self._session


def onnx_device(requested: str, fallback: str | None) -> str:
    import onnxruntime

    return pick_device(requested, fallback, "CUDAExecutionProvider" in onnxruntime.get_available_providers(), "onnxruntime")


def load(path: Path, version: VersionSpec) -> OnnxEmbedder | OnnxCrossEncoder:
    try:
        import onnxruntime  # noqa: F401 -- fail early with an install hint
    except ImportError as exc:
        raise ModelLoadError("backend 'onnx' needs onnxruntime: pip install 'hotswap[onnx]'") from exc
    if getattr(version, "task", "embed") == "rerank":  # a cross-encoder's logits, not vectors
        from hotswapd.backends.onnx_rerank import load as load_cross_encoder

        return load_cross_encoder(path, version)
    options: Options = version.options  # type: ignore[assignment]
    device = onnx_device(version.device, version.fallback)
    file, layout_dir, details = _onnx_file(path, version, options)
    layout = read_layout(layout_dir)
    own_max_tokens = layout.max_seq_length
    if version.max_seq_length is not None:
        layout = ModelLayout(layout.root, layout.transformer_dir, layout.pooling, layout.normalizes, version.max_seq_length)
    pooling = choose_mode(options.pooling, layout.pooling)
    embedder = OnnxEmbedder.create(file, layout, pooling, device=device, batch_size=version.batch_size, threads=options.intra_op_threads, spin_wait=options.spin_wait)
    embedder.model_max_tokens = own_max_tokens  # the model's own limit (the fingerprint's normal form)
    embedder.details = details
    log.info("onnx: serving %s (%s pooling, max %d tokens) on %s", file, pooling, layout.max_seq_length, device)
    return embedder


def _onnx_file(path: Path, version: VersionSpec, options: Options) -> tuple[Path, Path, dict[str, Any]]:
    """(the .onnx file to serve, the directory with its tokenizer and pooling, facts for hs models)."""
    tokenizer_dir = version.resolve(options.tokenizer) if options.tokenizer else None
    if path.is_file():
        if tokenizer_dir is None:
            raise ModelLoadError(f"{path} is a bare ONNX file: set `tokenizer` to a model directory with its tokenizer.json")
        return _checked_given_file(path, tokenizer_dir, version, options)
    given = path / options.file
    if given.is_file():
        return _checked_given_file(given, tokenizer_dir or path, version, options)
    return _exported(path, version, options)


def _checked_given_file(file: Path, tokenizer_dir: Path, version: VersionSpec, options: Options) -> tuple[Path, Path, dict[str, Any]]:
    if options.quantize != "none":
        raise ModelLoadError("quantize applies to models the backend exports; this source is already an ONNX file")
    details: dict[str, Any] = {"onnx_file": str(file)}
    if options.reference:
        reference = version.resolve(options.reference)
        key = _cache_key(file, reference, "check")
        check = created_once(_cache_root(), key, "hotswapd.backends.onnx_export", ["--onnx", str(file), "--reference", str(reference)], version.trust_remote_code, ())
        enforce(check, options.min_cosine, f"{file}")
        details["check"] = check
    return file, tokenizer_dir, details


def _exported(source: Path, version: VersionSpec, options: Options) -> tuple[Path, Path, dict[str, Any]]:
    file, check = _export(source, options.quantize, version.trust_remote_code)
    enforce(check, options.min_cosine, f"the {'int8' if options.quantize == 'int8' else 'fp32'} ONNX export of {source}")
    return file, source, {"onnx_file": str(file), "exported_now": check.get("exported_now", False), "check": check}


def _export(source: Path, quantize: str, trust_remote_code: bool) -> tuple[Path, dict[str, Any]]:
    key = _cache_key(source, None, quantize)
    check = created_once(_cache_root(), key, "hotswapd.backends.onnx_export", ["--source", str(source), "--reference", str(source), "--quantize", quantize], trust_remote_code, ("model.onnx",))
    return _cache_root() / key / "model.onnx", check


def _cache_root() -> Path:
    from hotswapd.host.paths import cache_dir

    return cache_dir() / "onnx"


def _cache_key(source: Path, reference: Path | None, variant: str) -> str:
    from hotswapd.sources.fingerprint import fingerprint

    parts = [fingerprint(source), fingerprint(reference) if reference else "", variant, f"opset{OPSET}", f"format{EXPORT_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def import_libraries() -> None:
    """Import what load() needs, so the RSS measured around a load is the model's, not the libraries'."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        pass  # load() reports the missing package with an install hint
