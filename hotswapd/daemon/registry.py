"""Which model versions are loaded, and loading them on demand.

The registry knows backends only through :func:`hotswapd.backends.get_loader`. A request
takes a reference to a :class:`LoadedVersion` and keeps using it even if the version is
evicted meanwhile: the embedder is released only when nothing holds it any more, so an
eviction never breaks a request in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from hotswapd.backends import Embedder, get_loader
from hotswapd.config import Config, ModelConfig, VersionConfig
from hotswapd.errors import HotswapError, ModelLoadError, UnknownModel
from hotswapd.sources import resolve_source

log = logging.getLogger(__name__)


@dataclass
class LoadedVersion:
    model: str
    version: str
    config: VersionConfig
    embedder: Embedder
    loaded_at: float
    load_seconds: float
    memory_bytes: int
    last_used: float = field(default_factory=time.time)


@dataclass
class _Slot:
    """Per-version state: the lock that serialises its loads, and what it holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: LoadedVersion | None = None
    last_error: str | None = None


class Registry:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._guard = threading.Lock()
        self._process = psutil.Process()

    @property
    def config(self) -> Config:
        return self._config

    def resolve(self, name: str | None) -> tuple[str, ModelConfig]:
        """The model a request means: the named one, or the default one."""
        chosen = name or self._config.default_model
        if chosen is None:
            raise UnknownModel(f"no model named and no default model; configured: {self._configured()}")
        model = self._config.models.get(chosen)
        if model is None:
            raise UnknownModel(f"unknown model {chosen!r}; configured: {self._configured()}")
        return chosen, model

    def _configured(self) -> str:
        return ", ".join(sorted(self._config.models)) or "(none)"

    def _slot(self, model: str, version: str) -> _Slot:
        with self._guard:
            return self._slots.setdefault((model, version), _Slot())

    def get(self, name: str | None) -> LoadedVersion:
        """The active version of a model, loading it first if needed."""
        model_name, model = self.resolve(name)
        slot = self._slot(model_name, model.active)
        loaded = slot.loaded
        if loaded is None:
            with slot.lock:
                loaded = slot.loaded or self._load_into(slot, model_name, model.active, model.active_version)
        loaded.last_used = time.time()
        return loaded

    def _load_into(self, slot: _Slot, model: str, version: str, spec: VersionConfig) -> LoadedVersion:
        log.info("loading %s@%s (%s from %s)", model, version, spec.backend, spec.source)
        rss_before = self._process.memory_info().rss
        started = time.perf_counter()
        try:
            path = resolve_source(spec.source, self._config.base_dir)
            embedder = get_loader(spec.backend)(path, spec)
        except HotswapError as exc:
            slot.last_error = exc.message
            log.error("loading %s@%s failed: %s", model, version, exc.message)
            raise
        except Exception as exc:  # a backend library can fail in ways we cannot enumerate
            slot.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading %s@%s failed", model, version)
            raise ModelLoadError(f"loading {model}@{version} failed: {slot.last_error}") from exc
        seconds = time.perf_counter() - started
        memory = max(0, self._process.memory_info().rss - rss_before)
        slot.loaded = LoadedVersion(model, version, spec, embedder, time.time(), seconds, memory)
        slot.last_error = None
        log.info("loaded %s@%s in %.2f s (+%.0f MiB RSS)", model, version, seconds, memory / 2**20)
        return slot.loaded

    def preload(self, name: str | None) -> LoadedVersion:
        return self.get(name)

    def evict(self, name: str | None) -> list[str]:
        """Unload every loaded version of a model; returns the versions unloaded."""
        model_name, _ = self.resolve(name)
        dropped = []
        with self._guard:
            slots = [(key, slot) for key, slot in self._slots.items() if key[0] == model_name]
        for (_, version), slot in slots:
            with slot.lock:
                if slot.loaded is not None:
                    self._release(slot.loaded)
                    slot.loaded = None
                    dropped.append(version)
        return dropped

    def _release(self, loaded: LoadedVersion) -> None:
        log.info("unloading %s@%s", loaded.model, loaded.version)
        try:
            loaded.embedder.close()
        except Exception:  # closing must never take the daemon down
            log.exception("closing %s@%s failed", loaded.model, loaded.version)

    def replace_config(self, config: Config) -> list[str]:
        """Adopt a new config; unload versions that it removed or changed. Returns their names."""
        self._config = config
        stale = []
        with self._guard:
            items = list(self._slots.items())
        for (model, version), slot in items:
            model_cfg = config.models.get(model)
            current = model_cfg.versions.get(version) if model_cfg else None
            with slot.lock:
                if slot.loaded is not None and slot.loaded.config != current:
                    self._release(slot.loaded)
                    slot.loaded = None
                    stale.append(f"{model}@{version}")
            if current is None:
                with self._guard:
                    self._slots.pop((model, version), None)
        return stale

    def preload_targets(self) -> list[str]:
        return [name for name, model in self._config.models.items() if model.active_version.preload]

    def loaded(self) -> list[LoadedVersion]:
        with self._guard:
            return [slot.loaded for slot in self._slots.values() if slot.loaded is not None]

    def describe(self) -> list[dict[str, Any]]:
        """One row per configured model, for the ``models`` op."""
        rows = []
        for name, model in sorted(self._config.models.items()):
            spec = model.active_version
            slot = self._slots.get((name, model.active))
            loaded = slot.loaded if slot else None
            rows.append(
                {
                    "name": name,
                    "version": model.active,
                    "versions": sorted(model.versions),
                    "backend": spec.backend,
                    "source": spec.source,
                    "loaded": loaded is not None,
                    "device": loaded.embedder.device if loaded else spec.device,
                    "dimension": loaded.embedder.dimension if loaded else None,
                    "memory_bytes": loaded.memory_bytes if loaded else None,
                    "load_seconds": round(loaded.load_seconds, 3) if loaded else None,
                    "last_used": loaded.last_used if loaded else None,
                    "last_error": slot.last_error if slot else None,
                    "default": name == self._config.default_model,
                }
            )
        return rows

    def close(self) -> None:
        for loaded in self.loaded():
            self._release(loaded)
