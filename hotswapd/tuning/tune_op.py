"""`hs tune`: measure a version's paths on this machine, and serve the new choice if it is auto.

Runs on the daemon's ``tune`` worker (measuring takes a minute or more, in a subprocess).
A loaded ``backend = "auto"`` version whose choice changed is reloaded: the new path loads
while the old one keeps serving, then they swap, as for a config edit.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from hotswapd.core.op_types import Outcome, Queued, option
from hotswapd.core.registry import Registry
from hotswapd.core.seams import OpSpec
from hotswapd.core.services import Services
from hotswapd.errors import Busy, RequestError, UnknownVersion
from hotswapd.tuning.run import tuned
from hotswapd.wire.protocol import Request

log = logging.getLogger(__name__)
# Backends that run a model directory on this machine: what the paths are ways of running.
LOCAL_BACKENDS = frozenset({"sentence-transformers", "transformers", "onnx", "openvino", "auto"})
MAX_TUNES = 2  # `hs tune` requests measuring or queued at once


class TuneOp:
    """The ``tune`` op: one measurement per version, two in all; the rest are told to come
    back (each takes minutes of CPU on the ``tune`` worker)."""

    def __init__(self, services: Services) -> None:
        self._registry = services.registry
        self.running: set[str] = set()  # NAME@VER being measured or queued for it
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Queued:
        name, version = self._registry.pinned_or_active(request.model)
        force = option(request, "force", bool, False)
        spec = f"{name}@{version}"
        with self._lock:
            if spec in self.running or len(self.running) >= MAX_TUNES:
                raise Busy(f"hs tune is already measuring {', '.join(sorted(self.running))}; try again when it is done", retry_after=30.0)
            self.running.add(spec)

        def tune() -> Outcome:
            try:
                return Outcome(tune_version(self._registry, name, version, force=force))
            finally:
                with self._lock:
                    self.running.discard(spec)

        return Queued("tune", tune)


TUNE_OP = OpSpec("tune", frozenset({"force"}), TuneOp)


def tune_version(registry: Registry, model: str, version: str, *, force: bool) -> dict[str, Any]:
    model_config = registry.config.models.get(model)
    spec = model_config.versions.get(version) if model_config else None
    if spec is None:  # removed by a config reload while this waited its turn
        raise UnknownVersion(f"{model}@{version} is no longer in the config")
    if spec.backend not in LOCAL_BACKENDS:
        raise RequestError(f"{model}@{version} runs on backend {spec.backend!r}: hs tune measures the ways this machine runs a local model ({', '.join(sorted(LOCAL_BACKENDS))})")
    path = spec.resolve(spec.source)
    if not path.is_dir():
        raise RequestError(f"{model}@{version}: hs tune needs a model directory (sentence-transformers or transformers), and {path} is not one")
    record = tuned(path, spec, force=force)
    loaded = registry.peek(model, version)
    serving = loaded.caps.tuned_path if loaded is not None else None
    applied = "not loaded" if loaded is None else "serving"
    if spec.backend != "auto":
        applied = 'not applied: the version\'s backend is not "auto"'
    elif loaded is not None and serving != record.chosen:
        log.info("tune: %s@%s moves from %s to %s", model, version, serving, record.chosen)
        registry.reload(model, version)
        applied = f"reloaded (was {serving})"
    return {"model": model, "version": version, "backend": spec.backend, "applied": applied, "tuning": record.model_dump()}
