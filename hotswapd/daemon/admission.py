"""Admission control: a bound on encode work accepted and not yet answered.

Without it a crowd of large requests queues until each client's timeout and holds its
texts in memory all that while (64 clients x 1 MB: half timed out, RSS +516 MiB). With
it, a request that would take the queue past ``daemon.max_queue_texts`` texts or
``daemon.max_queue_mb`` of text is refused at once with a typed ``busy`` error carrying a
retry hint, so callers back off instead of waiting blind. A lone request larger than the
bound is still admitted into an empty queue: every request valid under the per-request
limits can be served.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from hotswapd.errors import Busy

MB = 2**20
RETRY_FLOOR = 0.05  # seconds: a retry hint is never shorter than this
RETRY_CEILING = 5.0


@dataclass(frozen=True)
class QueueLimits:
    max_texts: int
    max_bytes: int


class Ticket:
    """Admitted work; :meth:`release` (once, idempotent) when its reply is built."""

    __slots__ = ("_admission", "texts", "nbytes", "_released")

    def __init__(self, admission: Admission, texts: int, nbytes: int) -> None:
        self._admission = admission
        self.texts = texts
        self.nbytes = nbytes
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self)


class Admission:
    def __init__(self, limits: QueueLimits) -> None:
        self.limits = limits
        self._texts = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.refused = 0
        # Recent completions (monotonic time, texts) to estimate how fast room frees up.
        self._done: deque[tuple[float, int]] = deque(maxlen=256)

    def admit(self, texts: int, nbytes: int) -> Ticket:
        """A ticket for the work, or :class:`Busy` if it would pass the bound."""
        with self._lock:
            empty = self._texts == 0
            if not empty and (self._texts + texts > self.limits.max_texts or self._bytes + nbytes > self.limits.max_bytes):
                self.refused += 1
                raise Busy(
                    f"hotswapd is busy: {self._texts} texts ({self._bytes / MB:.1f} MiB) already queued, the bound is "
                    f"{self.limits.max_texts} texts / {self.limits.max_bytes / MB:g} MiB (daemon.max_queue_texts, "
                    f"daemon.max_queue_mb); retry later",
                    retry_after=self._retry_after(texts),
                )
            self._texts += texts
            self._bytes += nbytes
        return Ticket(self, texts, nbytes)

    def set_limits(self, limits: QueueLimits) -> None:
        with self._lock:
            self.limits = limits

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            self._texts -= ticket.texts
            self._bytes -= ticket.nbytes
            self._done.append((time.monotonic(), ticket.texts))

    def _retry_after(self, texts: int) -> float:
        """Seconds until about ``texts`` texts of room free up, at the recent rate (lock held)."""
        if len(self._done) < 2:
            return 0.1
        span = self._done[-1][0] - self._done[0][0]
        rate = sum(count for _, count in self._done) / span if span > 0 else 0.0
        if rate <= 0:
            return 0.1
        return min(RETRY_CEILING, max(RETRY_FLOOR, texts / rate))

    def describe(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "queued_texts": self._texts,
                "queued_bytes": self._bytes,
                "max_texts": self.limits.max_texts,
                "max_bytes": self.limits.max_bytes,
                "refused": self.refused,
            }


def limits_from(max_texts: int, max_mb: float) -> QueueLimits:
    return QueueLimits(max_texts, int(max_mb * MB))
