"""Leases on loaded versions: a request that picked a version holds one until its reply is
built, and a retired version is closed only when its last lease comes back (see registry)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hotswapd.pipeline.loaded import LoadedVersion
    from hotswapd.core.snapshot import Published, Snapshot


class Leases:
    """The lease half of :class:`hotswapd.core.registry.Registry` (which provides the state)."""

    _guard: threading.Condition
    published: Published
    _closer: Callable[[Callable[[], None]], None]

    def get(self, model: str, version: str) -> LoadedVersion:
        raise NotImplementedError

    def _close(self, loaded: LoadedVersion) -> None:
        raise NotImplementedError

    def try_lease(self, model: str, version: str, snapshot: Snapshot | None = None) -> LoadedVersion | None:
        """A lease on the version loaded in ``snapshot`` (the one in force if None), or None
        if it is not loaded there or was retired since. Never blocks on a load: the socket
        thread calls it."""
        loaded = (snapshot or self.published.current).peek(model, version)
        with self._guard:
            if loaded is None or loaded.retired:
                return None
            loaded.leases += 1
            loaded.leases_taken += 1
        loaded.last_used = time.time()
        return loaded

    def lease(self, model: str, version: str) -> LoadedVersion:
        """A lease on the version, loading it first if needed (concurrent callers share a load)."""
        while True:
            loaded = self.get(model, version)
            with self._guard:
                if not loaded.retired:
                    loaded.leases += 1
                    loaded.leases_taken += 1
                    loaded.last_used = time.time()
                    return loaded
            # Retired between the load and the lease (an eviction raced us): load again.

    def release(self, loaded: LoadedVersion) -> None:
        """Return a lease; a retired version is closed when its last lease comes back."""
        with self._guard:
            loaded.leases -= 1
            close_now = loaded.retired and loaded.leases <= 0 and not loaded.closed
            if close_now:
                loaded.closed = True
        loaded.last_used = time.time()
        if close_now:
            self._closer(lambda: self._close(loaded))

    @contextmanager
    def leased(self, model: str, version: str) -> Iterator[LoadedVersion]:
        """A lease for the duration of a block (warm-up, agreement probes, housekeeping)."""
        loaded = self.lease(model, version)
        try:
            yield loaded
        finally:
            self.release(loaded)

