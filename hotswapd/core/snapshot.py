"""The serving state, published whole: the config, every model's route and every loaded
version, in one frozen :class:`Snapshot` behind one reference.

Readers (picking a version, ``hs models``, ``hs status``, HTTP, search, metrics) take
:attr:`Published.current` once and read everything from that one object, so no reader ever
sees half of a change (a new config beside old routes, a route to a version the config no
longer has). Writers (the registry's loads and unloads, the switchboard's switches and
rollouts, a config reload) change it only through :meth:`Published.publish`, which builds
the next snapshot from the one in force under one lock and swaps the reference: RCU, as
TF Serving's ``AspiredVersionsManager`` or Go's ``atomic.Value`` do it. A command that
answers "applied", "switched", "reloaded" or "evicted" answers after its publish returned,
so the very next request reads what it changed.

Slow work (loading weights, warming up, probing agreement) is done before ``publish``;
the change given to it is pure in-memory arithmetic and never calls ``publish`` itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from hotswapd.core.rollout import Route

if TYPE_CHECKING:
    from hotswapd.config.schema import Config
    from hotswapd.pipeline.loaded import LoadedVersion

VersionKey = tuple[str, str]  # (model, version)


def _frozen(mapping: Mapping[object, object] | None = None) -> MappingProxyType:  # type: ignore[type-arg]
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of what serves. Never changed: a change is a new snapshot."""

    generation: int
    config: Config
    routes: Mapping[str, Route] = field(default_factory=_frozen)
    loaded: Mapping[VersionKey, LoadedVersion] = field(default_factory=_frozen)
    # In a fleet: the etcd revision of the last fleet change applied here (replies carry it).
    fleet_generation: int | None = None

    def route(self, model: str) -> Route | None:
        return self.routes.get(model)

    def peek(self, model: str, version: str) -> LoadedVersion | None:
        return self.loaded.get((model, version))

    def with_routes(self, routes: Mapping[str, Route]) -> Snapshot:
        return replace(self, routes=_frozen(routes))

    def with_route(self, model: str, route: Route) -> Snapshot:
        return self.with_routes({**self.routes, model: route})

    def with_loaded(self, key: VersionKey, loaded: LoadedVersion | None) -> Snapshot:
        items = dict(self.loaded)
        if loaded is None:
            items.pop(key, None)
        else:
            items[key] = loaded
        return replace(self, loaded=_frozen(items))

    def with_all_loaded(self, loaded: Mapping[VersionKey, LoadedVersion]) -> Snapshot:
        return replace(self, loaded=_frozen(loaded))

    def with_config(self, config: Config) -> Snapshot:
        return replace(self, config=config)

    def with_fleet_generation(self, generation: int) -> Snapshot:
        """Never backwards: a fleet's changes to two models may be applied out of order."""
        return replace(self, fleet_generation=max(generation, self.fleet_generation or 0))


class Published:
    """The one owner of the serving state: the snapshot in force, and the only way to change it."""

    def __init__(self, config: Config) -> None:
        self._snapshot = Snapshot(0, config)
        self._lock = threading.Lock()
        self._writer: int | None = None  # the thread inside publish, to refuse a nested one

    @property
    def current(self) -> Snapshot:
        """The snapshot in force (one attribute read: never half of a change)."""
        return self._snapshot

    def publish(self, change: Callable[[Snapshot], Snapshot]) -> Snapshot:
        """Make ``change(current)`` the snapshot in force; returns it. ``change`` runs under
        the writers' lock: in-memory work only, and it must not publish itself."""
        if self._writer == threading.get_ident():
            raise RuntimeError("a snapshot change must not publish another (it would deadlock)")
        with self._lock:
            self._writer = threading.get_ident()
            try:
                before = self._snapshot
                after = change(before)
                if after is not before:
                    self._snapshot = replace(after, generation=before.generation + 1)
                return self._snapshot
            finally:
                self._writer = None
