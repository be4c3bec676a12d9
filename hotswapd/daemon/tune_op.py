"""`hs tune`: measure a version's paths on this machine, and serve the new choice if it is auto.

Runs on the daemon's ``tune`` worker (measuring takes a minute or more, in a subprocess).
A loaded ``backend = "auto"`` version whose choice changed is reloaded: the new path loads
while the old one keeps serving, then they swap, as for a config edit.
"""

from __future__ import annotations

import logging
from typing import Any

from hotswapd.daemon.registry import Registry
from hotswapd.tuning.run import tuned

log = logging.getLogger(__name__)


def tune_version(registry: Registry, model: str, version: str, *, force: bool) -> dict[str, Any]:
    spec = registry.config.models[model].versions[version]
    record = tuned(spec.resolve(spec.source), spec, force=force)
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
