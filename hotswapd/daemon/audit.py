"""The audit trail: one JSON line per load, unload, switch, rollback and rejected config.

Appended under the state dir; ``hs history`` reads it back through the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

READ_BLOCK = 64 * 1024
SWITCH_EVENTS = {"switch", "rollback", "abort", "auto_rollback", "rollout_step", "rollout_complete"}


class AuditLog:
    def __init__(self, path: Path, listener: Callable[..., None] | None = None) -> None:
        self.path = path
        self._listener = listener
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": round(time.time(), 3), "event": event, **{k: v for k, v in fields.items() if v is not None}}
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line)
            except OSError as exc:  # an unwritable audit log must not stop serving
                log.error("cannot append to audit log %s: %s", self.path, exc)
        if self._listener is not None:
            self._listener(event, **fields)
        return entry

    def read(self, model: str | None = None, limit: int = 50, events: set[str] | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` entries, oldest first, optionally for one model and some events.

        Read from the end of the file backwards, block by block, so the cost is that of the
        entries asked for, not of the whole log."""
        kept: list[dict[str, Any]] = []
        try:
            for line in _lines_backwards(self.path):
                try:
                    entry = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                    continue  # a line torn by a crash mid-write, or not ours
                if not isinstance(entry, dict):
                    continue
                if model is not None and entry.get("model") != model:
                    continue
                if events is not None and entry.get("event") not in events:
                    continue
                kept.append(entry)
                if len(kept) >= limit:
                    break
        except FileNotFoundError:
            return []
        kept.reverse()
        return kept


def _lines_backwards(path: Path, block: int = READ_BLOCK) -> Iterator[bytes]:
    """The file's lines, last first, reading ``block`` bytes at a time."""
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + tail
            lines = chunk.split(b"\n")
            tail = lines.pop(0)  # may continue in the block before
            for line in reversed(lines):
                if line:
                    yield line
            time.sleep(0)  # let the socket thread have the GIL between blocks
        if tail:
            yield tail
