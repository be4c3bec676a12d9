"""Which model versions are loaded, and loading them on demand.

The registry knows backends only through :func:`hotswapd.backends.get_loader`, and knows
nothing of which version is active (that is :mod:`hotswapd.daemon.switching`). A request
takes a reference to a :class:`LoadedVersion` and keeps using it even if the version is
unloaded meanwhile: the embedder is closed, but Python keeps the object alive until the
request lets go, so an eviction or reload never breaks a request in flight.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psutil

from hotswapd.backends import Embedder, get_loader, import_libraries
from hotswapd.config import Config, ModelConfig, VersionConfig
from hotswapd.daemon import memory
from hotswapd.daemon.fingerprint import fingerprint
from hotswapd.errors import HotswapError, ModelLoadError, UnknownModel, UnknownVersion

log = logging.getLogger(__name__)

EventSink = Callable[..., Any]


@dataclass
class LoadedVersion:
    model: str
    version: str
    config: VersionConfig
    embedder: Embedder
    fingerprint: str
    loaded_at: float
    load_seconds: float
    memory_bytes: int
    last_used: float = field(default_factory=time.time)
    warmed: bool = False

    @cached_property
    def vector_identity(self) -> bytes:
        """What besides the text decides this version's vectors: its weights and options."""
        options = self.config.model_dump_json(exclude={"preload", "embeddings_path", "compatible_with", "min_agreement"})
        return hashlib.sha256(f"{self.fingerprint}|{options}".encode()).digest()[:16]


@dataclass
class _Slot:
    """Per-version state: the lock that serialises its loads, and what it holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: LoadedVersion | None = None
    last_error: str | None = None


def split_spec(spec: str | None) -> tuple[str | None, str | None]:
    """``"name@version"`` -> (name, version); ``"name"`` -> (name, None)."""
    if spec is None:
        return None, None
    name, sep, version = spec.partition("@")
    return (name or None), (version if sep else None)


class Registry:
    def __init__(self, config: Config, on_event: EventSink | None = None) -> None:
        self._config = config
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._guard = threading.Lock()
        self._process = psutil.Process()
        self._on_event = on_event or (lambda event, **fields: None)
        # Loads are checked against the memory budget one at a time.
        self._budget_lock = threading.Lock()
        self._in_use: Counter[int] = Counter()  # id(LoadedVersion) -> requests running on it
        self._measured: dict[tuple[str, str], int] = {}
        self._evicted: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def config(self) -> Config:
        return self._config

    def resolve(self, spec: str | None) -> tuple[str, ModelConfig, str | None]:
        """The model a request means, and the version it pins (None: let routing choose)."""
        name, version = split_spec(spec)
        chosen = name or self._config.default_model
        if chosen is None:
            raise UnknownModel(f"no model named and no default model; configured: {self._configured()}")
        model = self._config.models.get(chosen)
        if model is None:
            raise UnknownModel(f"unknown model {chosen!r}; configured: {self._configured()}")
        if version is not None and version not in model.versions:
            raise UnknownVersion(f"model {chosen!r} has no version {version!r}; versions: {', '.join(model.versions)}")
        return chosen, model, version

    def _configured(self) -> str:
        return ", ".join(sorted(self._config.models)) or "(none)"

    def _slot(self, model: str, version: str) -> _Slot:
        with self._guard:
            return self._slots.setdefault((model, version), _Slot())

    def get(self, model: str, version: str) -> LoadedVersion:
        """A loaded version, loading it first if needed (concurrent callers share one load)."""
        slot = self._slot(model, version)
        loaded = slot.loaded
        if loaded is None:
            with slot.lock:
                loaded = slot.loaded or self._load_into(slot, model, version)
        loaded.last_used = time.time()
        return loaded

    def peek(self, model: str, version: str) -> LoadedVersion | None:
        slot = self._slots.get((model, version))
        return slot.loaded if slot else None

    def last_error(self, model: str, version: str) -> str | None:
        slot = self._slots.get((model, version))
        return slot.last_error if slot else None

    def _spec(self, model: str, version: str) -> VersionConfig:
        model_cfg = self._config.models.get(model)
        if model_cfg is None or version not in model_cfg.versions:
            raise UnknownVersion(f"{model}@{version} is not in the config")
        return model_cfg.versions[version]

    def _load_into(self, slot: _Slot, model: str, version: str) -> LoadedVersion:
        slot.loaded = self._load(slot, model, version, self._spec(model, version))
        return slot.loaded

    def _load(self, slot: _Slot, model: str, version: str, spec: VersionConfig) -> LoadedVersion:
        with self._budget_lock:
            return self._load_within_budget(slot, model, version, spec)

    def _load_within_budget(self, slot: _Slot, model: str, version: str, spec: VersionConfig) -> LoadedVersion:
        log.info("loading %s@%s (%s from %s)", model, version, spec.backend, spec.source)
        started = time.perf_counter()
        try:
            path = spec.resolve(spec.source)
            on_disk = memory.files_size(path)
            self._make_room(model, version, memory.estimate(spec, on_disk, self._measured.get((model, version))))
            import_libraries(spec.backend)
            rss_before = self._process.memory_info().rss
            digest = fingerprint(path)
            embedder = get_loader(spec.backend)(path, spec)
        except HotswapError as exc:
            self._failed(slot, model, version, exc.message)
            raise
        except Exception as exc:  # a backend library can fail in ways we cannot enumerate
            log.exception("loading %s@%s failed", model, version)
            self._failed(slot, model, version, f"{type(exc).__name__}: {exc}")
            raise ModelLoadError(f"loading {model}@{version} failed: {slot.last_error}") from exc
        seconds = time.perf_counter() - started
        measured = max(0, self._process.memory_info().rss - rss_before)
        # A backend that knows better (a remote endpoint holds nothing here) says so.
        # An RSS delta reads low when the load reuses pages the allocator kept from an
        # earlier unload, or maps weights lazily: a version counts at least its files'
        # size and the largest size ever measured for it.
        declared = getattr(embedder, "memory_bytes", None)
        used = declared if declared is not None else max(measured, on_disk, self._measured.get((model, version), 0))
        self._measured[(model, version)] = used
        if spec.ram_gb is not None:  # the operator's figure wins over a noisy RSS delta
            used = int(spec.ram_gb * memory.GB)
        self._evicted.pop((model, version), None)
        slot.last_error = None
        log.info(
            "loaded %s@%s in %.2f s (+%.0f MiB RSS, counted as %.0f MiB; fingerprint %s)", model, version, seconds, measured / 2**20, used / 2**20, digest
        )
        self._on_event("load", model=model, version=version, seconds=round(seconds, 3), fingerprint=digest)
        return LoadedVersion(model, version, spec, embedder, digest, time.time(), seconds, used)

    def _make_room(self, model: str, version: str, need: int) -> None:
        budget = self._config.memory
        if budget.max_gb is None and budget.min_free_gb is None:
            return
        loaded = [item for item in self.loaded() if (item.model, item.version) != (model, version)]
        over = memory.bytes_over(budget, loaded, need)
        if over <= 0:
            return
        with self._guard:
            in_use = set(self._in_use)  # entries leave the counter when their count reaches 0
        for victim in memory.victims(budget, loaded, over, in_use, f"{model}@{version}"):
            why = f"memory budget ({budget.policy}): made room for {model}@{version}"
            self.unload(victim.model, victim.version, "memory", why)

    @contextmanager
    def using(self, loaded: LoadedVersion) -> Iterator[None]:
        """Marks a version busy for the duration of a request: the budget never evicts it."""
        with self._guard:
            self._in_use[id(loaded)] += 1
        try:
            yield
        finally:
            with self._guard:
                self._in_use[id(loaded)] -= 1
                if self._in_use[id(loaded)] <= 0:
                    del self._in_use[id(loaded)]
            loaded.last_used = time.time()

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Unload versions of models with a ``ttl`` that have been unused that long."""
        now = time.time() if now is None else now
        expired = []
        for item in self.loaded():
            model_cfg = self._config.models.get(item.model)
            ttl = model_cfg.ttl if model_cfg else None
            with self._guard:
                busy = self._in_use.get(id(item), 0) > 0
            if ttl is not None and not busy and now - item.last_used >= ttl:
                if self.unload(item.model, item.version, "ttl", f"ttl: unused for {ttl:g} s"):
                    expired.append(f"{item.model}@{item.version}")
        return expired

    def evictions(self) -> list[dict[str, Any]]:
        """Versions unloaded by the budget, a ttl or `hs evict`, and why (until they load again)."""
        return [{"model": m, "version": v, **info} for (m, v), info in sorted(self._evicted.items())]

    def _failed(self, slot: _Slot, model: str, version: str, reason: str) -> None:
        slot.last_error = reason
        log.error("loading %s@%s failed: %s", model, version, reason)
        self._on_event("load_failed", model=model, version=version, reason=reason)

    def reload(self, model: str, version: str) -> LoadedVersion:
        """Load a fresh copy (new options) while the old one keeps serving, then swap them."""
        slot = self._slot(model, version)
        fresh = self._load(slot, model, version, self._spec(model, version))
        with slot.lock:
            old, slot.loaded = slot.loaded, fresh
        if old is not None:
            self._release(old, "reload")
        return fresh

    def unload(self, model: str, version: str, reason: str = "unload", why: str | None = None) -> bool:
        slot = self._slots.get((model, version))
        if slot is None:
            return False
        with slot.lock:
            old, slot.loaded = slot.loaded, None
        if old is None:
            return False
        if reason in ("evict", "memory", "ttl"):
            self._evicted[(model, version)] = {"reason": why or "hs evict", "at": time.time()}
        self._release(old, reason)
        return True

    def evict(self, model: str) -> list[str]:
        """Unload every loaded version of a model; returns the versions unloaded."""
        with self._guard:
            versions = [version for (name, version) in self._slots if name == model]
        return [version for version in versions if self.unload(model, version, "evict")]

    def _release(self, loaded: LoadedVersion, reason: str) -> None:
        log.info("unloading %s@%s (%s)", loaded.model, loaded.version, reason)
        self._on_event(reason, model=loaded.model, version=loaded.version)
        try:
            loaded.embedder.close()
        except Exception:  # closing must never take the daemon down
            log.exception("closing %s@%s failed", loaded.model, loaded.version)
        if reason != "reload":  # a request may still hold it; collected on a later unload
            memory.give_back()

    def replace_config(self, config: Config) -> tuple[list[str], list[tuple[str, str]]]:
        """Adopt a new config. Versions it removed are unloaded; loaded versions whose
        options changed are returned, for the caller to reload off the socket thread."""
        self._config = config
        removed, changed = [], []
        with self._guard:
            items = list(self._slots.items())
        for (model, version), slot in items:
            model_cfg = config.models.get(model)
            current = model_cfg.versions.get(version) if model_cfg else None
            if current is None:
                if self.unload(model, version, "unload"):
                    removed.append(f"{model}@{version}")
                with self._guard:
                    self._slots.pop((model, version), None)
            elif slot.loaded is not None and slot.loaded.config != current:
                changed.append((model, version))
        return removed, changed

    def loaded(self) -> list[LoadedVersion]:
        with self._guard:
            return [slot.loaded for slot in self._slots.values() if slot.loaded is not None]

    def close(self) -> None:
        for loaded in self.loaded():
            self._release(loaded, "unload")
