"""What `hs models` and `hs preload` tell of models and loaded versions (read-only views)."""

from __future__ import annotations

from typing import Any

from hotswapd.config.schema import ModelConfig
from hotswapd.pipeline.loaded import LoadedVersion
from hotswapd.core.registry import Registry
from hotswapd.core.snapshot import Snapshot
from hotswapd.core.switching import Switchboard


def hook_facts(registry: Registry, loaded: LoadedVersion | None) -> dict[str, Any]:
    """What each feature attached to a version (its corpus: rows, memory, or why not), by
    hook name; None for each when the version is not loaded."""
    return {hook.name: hook.describe(loaded) if loaded else None for hook in registry.seams.version_hooks}


def describe_model(registry: Registry, switchboard: Switchboard, name: str, snap: Snapshot) -> dict[str, Any] | None:
    """One row of `hs models`: the model, its routing and every loaded version, all read
    from one snapshot; None for a model the snapshot does not configure."""
    config = snap.config
    model = config.models.get(name)
    routing = switchboard.describe(name, snap)
    if model is None or routing is None:
        return None
    active = routing["active"]
    spec = model.versions[active]
    loaded = snap.peek(name, active)
    return {
        "name": name,
        "version": active,
        "versions": sorted(model.versions),
        "loaded_versions": sorted(v for v in model.versions if snap.peek(name, v) is not None),
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
            for item in sorted(snap.loaded.values(), key=lambda item: item.version)
            if item.model == name
        ],
        "backend": spec.backend,
        "source": spec.source,
        "embeddings_path": spec.embeddings_path,
        **hook_facts(registry, loaded),
        "loaded": loaded is not None,
        "fingerprint": loaded.fingerprint if loaded else None,
        "weights": loaded.weights if loaded else None,
        "device": loaded.embedder.device if loaded else spec.device,
        "dimension": loaded.embedder.dimension if loaded else None,
        "memory_bytes": loaded.memory_bytes if loaded else None,
        "details": backend_details(loaded) if loaded else {},
        "load_seconds": round(loaded.load_seconds, 3) if loaded else None,
        "last_used": loaded.last_used if loaded else None,
        "last_error": registry.last_error(name, active),
        "default": name == config.default_model,
        "previous": routing["previous"],
        "rollout": routing["rollout"],
        # Every configured version, loaded or not: what `hs models` lists, and what a
        # switch could go to.
        "version_detail": [describe_version(registry, snap, name, model, version, routing) for version in sorted(model.versions)],
    }


def describe_version(registry: Registry, snap: Snapshot, name: str, model: ModelConfig, version: str, routing: dict[str, Any]) -> dict[str, Any]:
    """One configured version: its share of the traffic, whether it is loaded and what it holds."""
    spec = model.versions[version]
    ttl = model.ttl
    loaded = snap.peek(name, version)
    last_error = registry.last_error(name, version)
    state = "loaded" if loaded else ("failed" if last_error else "not loaded")
    unloads_at = None
    if loaded is not None and ttl is not None and not spec.pinned:
        unloads_at = loaded.last_used + ttl
    return {
        "version": version,
        "active": version == routing["active"],
        "share": _share(version, routing),
        "state": state,
        "backend": spec.backend,
        "source": spec.source,
        "device": loaded.embedder.device if loaded else spec.device,
        "dimension": loaded.embedder.dimension if loaded else None,
        "max_tokens": (loaded.caps.max_tokens if loaded else None) or spec.max_seq_length,
        "memory_bytes": loaded.memory_bytes if loaded else None,
        **hook_facts(registry, loaded),
        "fingerprint": loaded.fingerprint if loaded else None,
        # How it computes (backend and precision) and why: configured, or chosen by `auto`.
        **serving_path(loaded, spec.backend),
        "pinned": spec.pinned,
        "last_used": loaded.last_used if loaded else None,
        "unloads_at": unloads_at,
        "last_error": last_error,
        # While it loads or a switch prepares it: {"step", "seconds"} (what `hs` shows).
        "loading": registry.steps.of((name, version)),
    }


def _share(version: str, routing: dict[str, Any]) -> float:
    """Percent of the model's traffic this version gets now."""
    rollout = routing["rollout"]
    if rollout is None:
        return 100.0 if version == routing["active"] else 0.0
    if version == rollout["target"]:
        return float(rollout["share"])
    if version == rollout["source"]:
        return 100.0 - float(rollout["share"])
    return 0.0


def describe_loaded(registry: Registry, loaded: LoadedVersion) -> dict[str, Any]:
    return {
        "model": loaded.model,
        "version": loaded.version,
        "fingerprint": loaded.fingerprint,
        "weights": loaded.weights,
        "device": loaded.embedder.device,
        "dimension": loaded.embedder.dimension,
        "load_seconds": round(loaded.load_seconds, 3),
        "memory_bytes": loaded.memory_bytes,
        "backend": loaded.config.backend,
        "details": backend_details(loaded),
        **hook_facts(registry, loaded),
    }


def serving_path(loaded: LoadedVersion | None, backend: str) -> dict[str, str | None]:
    """``path`` (say "onnx-int8") and ``path_reason`` of a version: what `backend = "auto"`
    chose and why, or the configured backend with the precision it runs in."""
    if loaded is None:
        return {"path": "chosen when loaded" if backend == "auto" else None, "path_reason": None}
    tuned = loaded.caps.tuned
    if isinstance(tuned, dict):
        return {"path": str(tuned.get("path")), "path_reason": f"auto: {tuned.get('reason')}"}
    details = backend_details(loaded)
    if "members" in details:  # an ensemble: its members' paths are on their own rows
        return {"path": f"ensemble-{details.get('combine')}", "path_reason": str(details["members"])}
    options = loaded.config.options
    precision = details.get("precision") or ("int8" if getattr(options, "quantize", "none") == "int8" else "fp32")
    reason = details.get("precision_reason") or "configured"
    return {"path": f"{backend}-{precision}", "path_reason": str(reason)}


def backend_details(loaded: LoadedVersion) -> dict[str, Any]:
    """What the backend tells of itself (an exported file, an endpoint), if it tells anything."""
    return loaded.caps.describe() if loaded.caps.describe is not None else {}
