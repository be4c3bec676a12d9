"""Per-version health over a sliding time window: error rate and latency percentiles.

Memory is bounded whatever the traffic: each version keeps at most ``max_events`` of its
latest outcomes (and none older than the retention window). Under heavy traffic the
window thus covers the last ``max_events`` requests, which is plenty for an error rate
or a p95.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HealthSnapshot:
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


MAX_EVENTS = 10_000


class HealthBook:
    """Outcomes of requests, by (model, version). Written by workers, read by the loop."""

    def __init__(self, window_seconds: float = 60.0, max_events: int = MAX_EVENTS) -> None:
        self._window = window_seconds
        self._max_events = max_events
        self._events: dict[tuple[str, str], deque[tuple[float, bool, float]]] = {}
        self._lock = threading.Lock()

    def record(self, model: str, version: str, ok: bool, latency_ms: float) -> None:
        now = time.monotonic()
        with self._lock:
            events = self._events.setdefault((model, version), deque(maxlen=self._max_events))
            events.append((now, ok, latency_ms))
            self._trim(events, now, self._window)

    @staticmethod
    def _trim(events: deque[tuple[float, bool, float]], now: float, window: float) -> None:
        while events and events[0][0] < now - window:
            events.popleft()

    def snapshot(self, model: str, version: str, window_seconds: float | None = None) -> HealthSnapshot:
        window = min(window_seconds or self._window, self._window)
        now = time.monotonic()
        with self._lock:
            events = [e for e in self._events.get((model, version), ()) if e[0] >= now - window]
        latencies = sorted(e[2] for e in events)
        errors = sum(1 for e in events if not e[1])
        return HealthSnapshot(len(events), errors, _percentile(latencies, 50), _percentile(latencies, 95))

    def retained(self, model: str, version: str) -> int:
        """How many outcomes are held for a version (the memory bound, observable)."""
        with self._lock:
            return len(self._events.get((model, version), ()))

    def forget(self, model: str, version: str) -> None:
        with self._lock:
            self._events.pop((model, version), None)


def _percentile(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))], 3)
