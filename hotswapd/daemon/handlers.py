"""What each op does. The router calls :meth:`Handlers.handle` on its own thread.

An op answers either at once (an :class:`Outcome`) or with a *job*: a callable the router
runs on a worker thread, for anything that may take long (inference, loading). All
validation happens before a job is made, so a bad request is answered without waiting
behind a running inference.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from hotswapd import __version__
from hotswapd.daemon.registry import LoadedVersion, Registry
from hotswapd.errors import (
    BatchTooLarge,
    EmptyRequest,
    InferenceError,
    InvalidText,
    ProtocolError,
    TextTooLong,
)
from hotswapd.protocol import VECTOR_DTYPE, Request


@dataclass
class Outcome:
    result: dict[str, Any]
    payload: list[Any] = field(default_factory=list)


Job = Callable[[], Outcome]


@dataclass
class DaemonState:
    """What ``status`` reports about the daemon itself; the router and main keep it current."""

    endpoint: str
    config_path: str | None
    started_at: float = field(default_factory=time.time)
    phase: str = "starting"  # starting -> ready -> stopping
    in_flight: int = 0
    config_error: str | None = None
    stop_requested: bool = False


ALLOWED_OPTIONS: dict[str, set[str]] = {"encode": {"normalize"}}


class Handlers:
    def __init__(self, registry: Registry, state: DaemonState) -> None:
        self._registry = registry
        self._state = state
        self._process = psutil.Process()

    def handle(self, request: Request) -> Outcome | Job:
        unknown = set(request.options) - ALLOWED_OPTIONS.get(request.op, set())
        if unknown:
            raise ProtocolError(f"op {request.op!r} takes no option(s) {', '.join(sorted(unknown))}")
        return getattr(self, f"_op_{request.op}")(request)

    def _op_ping(self, request: Request) -> Outcome:
        return Outcome({"pong": True, "pid": os.getpid(), "phase": self._state.phase})

    def _op_models(self, request: Request) -> Outcome:
        return Outcome({"models": self._registry.describe()})

    def _op_status(self, request: Request) -> Outcome:
        loaded = self._registry.loaded()
        return Outcome(
            {
                "version": __version__,
                "pid": os.getpid(),
                "phase": self._state.phase,
                "uptime_seconds": round(time.time() - self._state.started_at, 3),
                "socket": self._state.endpoint,
                "config_path": self._state.config_path,
                "config_error": self._state.config_error,
                "default_model": self._registry.config.default_model,
                "loaded": [f"{item.model}@{item.version}" for item in loaded],
                "in_flight": self._state.in_flight,
                "rss_bytes": self._process.memory_info().rss,
                "models_memory_bytes": sum(item.memory_bytes for item in loaded),
            }
        )

    def _op_shutdown(self, request: Request) -> Outcome:
        self._state.stop_requested = True
        return Outcome({"stopping": True, "pid": os.getpid()})

    def _op_evict(self, request: Request) -> Outcome:
        name, _ = self._registry.resolve(request.model)
        return Outcome({"model": name, "evicted": self._registry.evict(name)})

    def _op_preload(self, request: Request) -> Job:
        name, _ = self._registry.resolve(request.model)

        def job() -> Outcome:
            loaded = self._registry.preload(name)
            return Outcome(_describe_loaded(loaded))

        return job

    def _op_encode(self, request: Request) -> Job:
        name, model = self._registry.resolve(request.model)
        texts = self._decode_texts(request.payload)
        normalize = request.options.get("normalize", model.active_version.normalize)
        if not isinstance(normalize, bool):
            raise ProtocolError("option 'normalize' must be true or false")

        def job() -> Outcome:
            loaded = self._registry.get(name)
            vectors = _run_encoder(loaded, texts, normalize)
            count, dim = vectors.shape
            result = {"model": name, "version": loaded.version, "dim": dim, "count": count, "dtype": VECTOR_DTYPE}
            return Outcome(result, [vectors])

        return job

    def _decode_texts(self, frames: list[bytes]) -> list[str]:
        limits = self._registry.config.daemon
        if not frames:
            raise EmptyRequest("encode needs at least one text")
        if len(frames) > limits.max_batch_texts:
            raise BatchTooLarge(
                f"{len(frames)} texts in one request; the limit is {limits.max_batch_texts} "
                "(daemon.max_batch_texts): send smaller chunks"
            )
        texts = []
        for index, frame in enumerate(frames):
            if len(frame) > limits.max_text_bytes:
                raise TextTooLong(
                    f"text {index} is {len(frame)} bytes; the limit is {limits.max_text_bytes} (daemon.max_text_bytes)"
                )
            try:
                texts.append(bytes(frame).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidText(f"text {index} is not valid UTF-8 (byte {exc.start})") from exc
        return texts


def _run_encoder(loaded: LoadedVersion, texts: list[str], normalize: bool) -> Any:
    import numpy as np

    try:
        vectors = loaded.embedder.encode(texts, normalize=normalize)
    except Exception as exc:  # the backend's own failure, whatever its type, is reported to the caller
        raise InferenceError(f"{loaded.model}@{loaded.version} failed to encode: {type(exc).__name__}: {exc}") from exc
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise InferenceError(f"{loaded.model}@{loaded.version} returned shape {vectors.shape} for {len(texts)} texts")
    return vectors


def _describe_loaded(loaded: LoadedVersion) -> dict[str, Any]:
    return {
        "model": loaded.model,
        "version": loaded.version,
        "device": loaded.embedder.device,
        "dimension": loaded.embedder.dimension,
        "load_seconds": round(loaded.load_seconds, 3),
        "memory_bytes": loaded.memory_bytes,
    }
