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
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from hotswapd.backends.devices import pick_device
from hotswapd.backends.layout import ModelLayout, read_layout, vector_space
from hotswapd.backends.pooling import PoolingName, choose_mode, l2_normalize, pool
from hotswapd.backends.tokenizing import TextTokenizer, TokenBatch, TokenizedBackend, encode_in_batches
from hotswapd.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

    from hotswapd.config import VersionConfig

log = logging.getLogger(__name__)
# What the exporter (onnx_export, run in a subprocess) writes; part of the export cache key.
OPSET = 17
# Part of the export cache key: bump it when the exported graph would differ.
EXPORT_FORMAT = 1
EXPORT_TIMEOUT_SECONDS = 1800.0


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


class OnnxEmbedder(TokenizedBackend):
    def __init__(self, session: onnxruntime.InferenceSession, tokenizer: TextTokenizer, pooling: str, normalizes: bool, device: str, batch_size: int) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._normalizes = normalizes
        self.batch_size = batch_size
        self._inputs = {item.name for item in session.get_inputs()}
        self.device = device
        self.details: dict[str, Any] = {}
        self.dimension = int(self.encode(["dimension probe"], normalize=False).shape[1])

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

    def _run(self, batch: TokenBatch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "token_type_ids": batch.token_type_ids}
        (tokens,) = self._session.run(["last_hidden_state"], {k: v for k, v in feeds.items() if k in self._inputs})[:1]
        return pool(tokens, batch.attention_mask, self._pooling)

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        vectors = encode_in_batches(texts, self._tokenizer, self.batch_size, self._run)
        return l2_normalize(vectors) if normalize else vectors

    def space(self) -> dict[str, object]:
        return vector_space(self._pooling, self._normalizes, self._tokenizer.vocabulary())

    def describe(self) -> dict[str, Any]:
        return dict(self.details)

    def close(self) -> None:
        del self._session


def onnx_device(requested: str, fallback: str | None) -> str:
    import onnxruntime

    return pick_device(requested, fallback, "CUDAExecutionProvider" in onnxruntime.get_available_providers(), "onnxruntime")


def load(path: Path, version: VersionConfig) -> OnnxEmbedder:
    try:
        import onnxruntime  # noqa: F401 -- fail early with an install hint
    except ImportError as exc:
        raise ModelLoadError("backend 'onnx' needs onnxruntime: pip install 'hotswap[onnx]'") from exc
    options: Options = version.options  # type: ignore[assignment]
    device = onnx_device(version.device, version.fallback)
    file, layout_dir, details = _onnx_file(path, version, options)
    layout = read_layout(layout_dir)
    if version.max_seq_length is not None:
        layout = ModelLayout(layout.root, layout.transformer_dir, layout.pooling, layout.normalizes, version.max_seq_length)
    pooling = choose_mode(options.pooling, layout.pooling)
    embedder = OnnxEmbedder.create(file, layout, pooling, device=device, batch_size=version.batch_size, threads=options.intra_op_threads, spin_wait=options.spin_wait)
    embedder.details = details
    log.info("onnx: serving %s (%s pooling, max %d tokens) on %s", file, pooling, layout.max_seq_length, device)
    return embedder


def _onnx_file(path: Path, version: VersionConfig, options: Options) -> tuple[Path, Path, dict[str, Any]]:
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


def _checked_given_file(file: Path, tokenizer_dir: Path, version: VersionConfig, options: Options) -> tuple[Path, Path, dict[str, Any]]:
    if options.quantize != "none":
        raise ModelLoadError("quantize applies to models the backend exports; this source is already an ONNX file")
    details: dict[str, Any] = {"onnx_file": str(file)}
    if options.reference:
        reference = version.resolve(options.reference)
        key = _cache_key(file, reference, "check")
        check = _cached_or_created(key, ["--onnx", str(file), "--reference", str(reference)], version)
        _enforce(check, options.min_cosine, f"{file}")
        details["check"] = check
    return file, tokenizer_dir, details


def _exported(source: Path, version: VersionConfig, options: Options) -> tuple[Path, Path, dict[str, Any]]:
    key = _cache_key(source, None, options.quantize)
    check = _cached_or_created(key, ["--source", str(source), "--reference", str(source), "--quantize", options.quantize], version)
    file = _cache_root() / key / "model.onnx"
    _enforce(check, options.min_cosine, f"the {'int8' if options.quantize == 'int8' else 'fp32'} ONNX export of {source}")
    return file, source, {"onnx_file": str(file), "exported_now": check.get("exported_now", False), "check": check}


def _cache_root() -> Path:
    from hotswapd.paths import cache_dir

    return cache_dir() / "onnx"


def _cache_key(source: Path, reference: Path | None, variant: str) -> str:
    from hotswapd.fingerprint import fingerprint

    parts = [fingerprint(source), fingerprint(reference) if reference else "", variant, f"opset{OPSET}", f"format{EXPORT_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _cached_or_created(key: str, arguments: list[str], version: VersionConfig) -> dict[str, Any]:
    """The check of a cached export, or export and check now (in a subprocess) and cache it."""
    final = _cache_root() / key
    if (final / "check.json").exists():
        cached = _read_check(final)
        if cached is not None:
            log.info("onnx: reusing %s", final)
            return {**cached, "exported_now": False}
        log.warning("onnx: the cached export %s has an unusable check.json; exporting again", final)
        shutil.rmtree(final, ignore_errors=True)
    staging = _cache_root() / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "hotswapd.backends.onnx_export", *arguments, "--out", str(staging)]
    if version.trust_remote_code:
        command.append("--trust-remote-code")
    log.info("onnx: creating %s (runs torch once in a subprocess)", final)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"ONNX export took over {EXPORT_TIMEOUT_SECONDS:.0f} s and was stopped") from exc
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelLoadError(f"ONNX export failed: {last}")
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another daemon placed the same export first
    for item in final.iterdir():
        item.chmod(0o444)
    fresh = _read_check(final)
    if fresh is None:
        raise ModelLoadError(f"ONNX export wrote an unusable {final / 'check.json'}")
    return {**fresh, "exported_now": True}


def _read_check(directory: Path) -> dict[str, Any] | None:
    """The export's agreement check, or None if the file is not one (the cache is a
    directory on disk: anything may have written it)."""
    from hotswapd.safefiles import read_regular

    try:
        check = json.loads(read_regular(directory / "check.json", 1 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    numbers = ("mean_cosine", "min_cosine", "sample_size")
    if not isinstance(check, dict) or not all(isinstance(check.get(key), (int, float)) and not isinstance(check.get(key), bool) for key in numbers):
        return None
    return check


def _enforce(check: dict[str, Any], threshold: float, what: str) -> None:
    if check["mean_cosine"] < threshold:
        raise ModelLoadError(
            f"{what} agrees with the torch model at mean cosine {check['mean_cosine']:.4f} "
            f"(min {check['min_cosine']:.4f}) on the {check['sample_size']}-text check sample, "
            f"below min_cosine {threshold}: refused"
        )


def import_libraries() -> None:
    """Import what load() needs, so the RSS measured around a load is the model's, not the libraries'."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        pass  # load() reports the missing package with an install hint
