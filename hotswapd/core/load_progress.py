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

    def note(self, key: Key, step: str) -> None:
        with self._lock:
            self._now[key] = (step, time.monotonic())

    def clear(self, key: Key) -> None:
        with self._lock:
            self._now.pop(key, None)

    def reporter(self, key: Key) -> Callable[[str], None]:
        return lambda step: self.note(key, step)

    def of(self, key: Key) -> dict[str, object] | None:
        """{"step", "seconds"} (how long on this step), or None when nothing runs."""
        with self._lock:
            entry = self._now.get(key)
        if entry is None:
            return None
        return {"step": entry[0], "seconds": round(time.monotonic() - entry[1], 1)}
