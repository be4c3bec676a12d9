"""`hs tune`: measure a version's paths on this machine, and serve the new choice if it is auto.

Runs on the daemon's ``tune`` worker (measuring takes a minute or more, in a subprocess).
A loaded ``backend = "auto"`` version whose choice changed is reloaded: the new path loads
while the old one keeps serving, then they swap, as for a config edit.
"""

from __future__ import annotations

import logging
from typing import Any

from hotswapd.daemon.registry import Registry
from hotswapd.errors import RequestError, UnknownVersion
from hotswapd.tuning.run import tuned

log = logging.getLogger(__name__)
# Backends that run a model directory on this machine: what the paths are ways of running.
LOCAL_BACKENDS = frozenset({"sentence-transformers", "transformers", "onnx", "openvino", "auto"})


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
    serving = getattr(loaded.embedder, "tuned_path", None) if loaded is not None else None
    applied = "not loaded" if loaded is None else "serving"
    if spec.backend != "auto":
        applied = 'not applied: the version\'s backend is not "auto"'
    elif loaded is not None and serving != record.chosen:
        log.info("tune: %s@%s moves from %s to %s", model, version, serving, record.chosen)
        registry.reload(model, version)
        applied = f"reloaded (was {serving})"
    return {"model": model, "version": version, "backend": spec.backend, "applied": applied, "tuning": record.model_dump()}
