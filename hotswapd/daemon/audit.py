"""The audit trail: one JSON line per load, unload, switch, rollback and rejected config.

Appended under the state dir; ``hs history`` reads it back through the daemon.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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
        """The last ``limit`` entries, oldest first, optionally for one model and some events."""
        kept: deque[dict[str, Any]] = deque(maxlen=limit)
        try:
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line torn by a crash mid-write
                    if model is not None and entry.get("model") != model:
                        continue
                    if events is not None and entry.get("event") not in events:
                        continue
                    kept.append(entry)
        except FileNotFoundError:
            return []
        return list(kept)
