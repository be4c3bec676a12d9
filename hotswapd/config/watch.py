"""Watching the config file with watchdog, the way editors actually save.

Editors write in place, truncate then write, or write a temp file and rename it over the
original, often as a burst of events. We watch the *directory* (a rename replaces the
inode a file watch would follow), note the time of the last event touching the config
path, and report a change once the file has been quiet for the debounce period. The
content hash decides whether anything changed at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str | None:
    from hotswapd.config.schema import MAX_CONFIG_BYTES
    from hotswapd.host.safefiles import read_regular

    try:
        return hashlib.sha256(read_regular(path, MAX_CONFIG_BYTES)).hexdigest()
    except (OSError, ValueError):  # missing, not a regular file (a FIFO would block), too big
        return None


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ConfigWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = {event.src_path, getattr(event, "dest_path", "") or ""}
        if any(os.path.abspath(str(p)) == self._watcher.target for p in paths if p):
            self._watcher.touched()


class ConfigWatcher:
    def __init__(self, path: Path, debounce_seconds: float) -> None:
        self.path = path
        self.target = os.path.abspath(path)
        self._debounce = debounce_seconds
        self._last_event: float | None = None
        self._lock = threading.Lock()
        self._applied_digest = file_digest(path)
        self._observer = Observer()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._observer.schedule(_Handler(self), str(self.path.parent), recursive=False)
        self._observer.daemon = True
        self._observer.start()
        log.info("watching %s for changes", self.path)

    def touched(self) -> None:
        with self._lock:
            self._last_event = time.monotonic()

    def due(self) -> bool:
        """True once, when the file changed and has been quiet for the debounce period."""
        with self._lock:
            if self._last_event is None or time.monotonic() - self._last_event < self._debounce:
                return False
            self._last_event = None
        digest = file_digest(self.path)
        if digest is None or digest == self._applied_digest:
            return False  # mid-rename gap, or a save that changed nothing
        return True

    def mark_applied(self) -> None:
        """Remember the file's current content as seen (applied or rejected)."""
        self._applied_digest = file_digest(self.path)

    def stop(self) -> None:
        if not self._observer.is_alive():
            return  # never started: the daemon failed before it got that far (its error is the one to report)
        self._observer.stop()
        self._observer.join(timeout=5)
