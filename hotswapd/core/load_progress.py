"""Which step each version's load (or switch) is on now, for `hs models` and the waits `hs`
shows: resolving, converting, exporting, quantising, loading, warming up, checking.

A plain map under a lock, written by the thread that loads or switches, read by whoever
describes the versions; an entry lives only while that work runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Key = tuple[str, str]


class LoadSteps:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: dict[Key, tuple[str, float]] = {}
        # Bumped by clear(): a reporter handed out before is stale from then on (a load
        # abandoned at its timeout goes on reporting from its thread, to no one).
        self._generation: dict[Key, int] = {}

    def note(self, key: Key, step: str) -> None:
        with self._lock:
            self._now[key] = (step, time.monotonic())

    def clear(self, key: Key) -> None:
        with self._lock:
            self._now.pop(key, None)
            self._generation[key] = self._generation.get(key, 0) + 1

    def reporter(self, key: Key) -> Callable[[str], None]:
        with self._lock:
            generation = self._generation.get(key, 0)

        def report(step: str) -> None:
            with self._lock:
                if self._generation.get(key, 0) == generation:
                    self._now[key] = (step, time.monotonic())

        return report

    def of(self, key: Key) -> dict[str, object] | None:
        """{"step", "seconds"} (how long on this step), or None when nothing runs."""
        with self._lock:
            entry = self._now.get(key)
        if entry is None:
            return None
        return {"step": entry[0], "seconds": round(time.monotonic() - entry[1], 1)}
