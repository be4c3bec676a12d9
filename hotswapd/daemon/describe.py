"""What `hs models` and `hs preload` tell of models and loaded versions (read-only views)."""

from __future__ import annotations

from typing import Any

from hotswapd.daemon.loaded import LoadedVersion
from hotswapd.daemon.registry import Registry
from hotswapd.daemon.switching import Switchboard


def describe_model(registry: Registry, switchboard: Switchboard, name: str) -> dict[str, Any]:
    """One row of `hs models`: the model, its routing and every loaded version."""
    model = registry.config.models[name]
    routing = switchboard.describe(name)
    active = routing["active"]
    spec = model.versions[active]
    loaded = registry.peek(name, active)
    return {
        "name": name,
        "version": active,
        "versions": sorted(model.versions),
        "loaded_versions": sorted(v for v in model.versions if registry.peek(name, v) is not None),
        # Every loaded version with what it holds: the memory budget's view of the model.
        "loaded_detail": [
            {
                "version": item.version,
                "backend": item.config.backend,
                "memory_bytes": item.memory_bytes,
                "device": item.embedder.device,
                "pinned": item.config.pinned,
                "last_used": item.last_used,
            }
            for item in sorted(registry.loaded(), key=lambda item: item.version)
            if item.model == name
        ],
        "backend": spec.backend,
        "source": spec.source,
        "embeddings_path": spec.embeddings_path,
        "loaded": loaded is not None,
        "fingerprint": loaded.fingerprint if loaded else None,
        "device": loaded.embedder.device if loaded else spec.device,
        "dimension": loaded.embedder.dimension if loaded else None,
        "memory_bytes": loaded.memory_bytes if loaded else None,
        "details": backend_details(loaded) if loaded else {},
        "load_seconds": round(loaded.load_seconds, 3) if loaded else None,
        "last_used": loaded.last_used if loaded else None,
        "last_error": registry.last_error(name, active),
        "default": name == registry.config.default_model,
        "previous": routing["previous"],
        "rollout": routing["rollout"],
    }


def describe_loaded(loaded: LoadedVersion) -> dict[str, Any]:
    return {
        "model": loaded.model,
        "version": loaded.version,
        "fingerprint": loaded.fingerprint,
        "device": loaded.embedder.device,
        "dimension": loaded.embedder.dimension,
        "load_seconds": round(loaded.load_seconds, 3),
        "memory_bytes": loaded.memory_bytes,
        "backend": loaded.config.backend,
        "details": backend_details(loaded),
    }


def backend_details(loaded: LoadedVersion) -> dict[str, Any]:
    """What the backend tells of itself (an exported file, an endpoint), if it tells anything."""
    describe = getattr(loaded.embedder, "describe", None)
    return describe() if callable(describe) else {}
