"""Admission control: a bound on encode work accepted and not yet answered.

Without it a crowd of large requests queues until each client's timeout and holds its
texts in memory all that while (64 clients x 1 MB: half timed out, RSS +516 MiB). With
it, a request that would take the queue past ``daemon.max_queue_texts`` texts or
``daemon.max_queue_mb`` of text is refused at once with a typed ``busy`` error carrying a
retry hint, so callers back off instead of waiting blind. A lone request larger than the
bound is still admitted into an empty queue: every request valid under the per-request
limits can be served.

The bound in texts and bytes says nothing of time: 64 one-megabyte texts fit 64 MiB but
take half a minute to tokenize. So admission also knows what work costs: the inference
thread reports every batch (texts, characters, seconds), a least-squares fit of
``seconds = a * texts + b * chars`` over the last batches prices the queue, and a request
whose caller's deadline would pass before the queued work ahead of it and its own are
done is refused at once with ``busy``, not admitted to time out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hotswapd.errors import Busy

MB = 2**20
RETRY_FLOOR = 0.05  # seconds: a retry hint is never shorter than this
RETRY_CEILING = 5.0
# After this much text has gone through, a queue that empties has its freed memory given
# back to the system: glibc keeps the heap a burst of large texts grew (+109 MiB RSS after
# an overload run, measured) unless asked to trim it.
TRIM_AFTER_BYTES = 32 * MB
COST_WINDOW = 64  # batches the cost model is fitted on
DEADLINE_MARGIN = 0.9  # admit only work expected to finish within this share of its deadline


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
    def __init__(self, limits: QueueLimits, on_drained: Callable[[], object] | None = None) -> None:
        self.limits = limits
        self._on_drained = on_drained
        self._since_trim = 0
        self._texts = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.refused = 0
        # What the periodic benchmark reads to stay out of the way: requests so far, the last one's time.
        self.admitted = 0
        self.last_admitted = 0.0
        # Recent completions (monotonic time, texts) to estimate how fast room frees up.
        self._done: deque[tuple[float, int]] = deque(maxlen=256)
        self._batches: deque[tuple[int, int, float]] = deque(maxlen=COST_WINDOW)
        self._cost: tuple[float, float] | None = (0.0, 0.0)  # seconds per text, per byte; None: refit

    def admit(self, texts: int, nbytes: int, deadline_seconds: float | None = None) -> Ticket:
        """A ticket for the work, or :class:`Busy` if it would pass the bound, or would not
        be done within ``deadline_seconds`` behind the work already queued."""
        with self._lock:
            empty = self._texts == 0
            if not empty and (self._texts + texts > self.limits.max_texts or self._bytes + nbytes > self.limits.max_bytes):
                self._refuse(
                    f"hotswapd is busy: {self._texts} texts ({self._bytes / MB:.1f} MiB) already queued, the bound is "
                    f"{self.limits.max_texts} texts / {self.limits.max_bytes / MB:g} MiB (daemon.max_queue_texts, "
                    f"daemon.max_queue_mb); retry later",
                    texts,
                )
            if not empty and deadline_seconds is not None:
                wait = self._seconds_for(self._texts + texts, self._bytes + nbytes)
                if wait > deadline_seconds * DEADLINE_MARGIN:
                    self._refuse(
                        f"hotswapd is busy: the work queued ahead would take about {wait:.1f} s, past this "
                        f"request's deadline of {deadline_seconds:g} s; retry later",
                        texts,
                    )
            self._texts += texts
            self._bytes += nbytes
            self.admitted += 1
            self.last_admitted = time.monotonic()
        return Ticket(self, texts, nbytes)

    @property
    def queued_texts(self) -> int:
        return self._texts

    def _refuse(self, message: str, texts: int) -> None:
        """Raise Busy (lock held)."""
        self.refused += 1
        raise Busy(message, retry_after=self._retry_after(texts))

    def observe(self, texts: int, chars: int, seconds: float) -> None:
        """One batch's cost, reported by the inference thread (cheap: the model is refitted
        only when a crowded queue needs pricing)."""
        with self._lock:
            self._batches.append((texts, chars, seconds))
            self._cost = None

    def _seconds_for(self, texts: int, nbytes: int) -> float:
        """Lock held."""
        if self._cost is None:
            self._cost = fit_cost(self._batches)
        per_text, per_byte = self._cost
        return per_text * texts + per_byte * nbytes

    def set_limits(self, limits: QueueLimits) -> None:
        with self._lock:
            self.limits = limits

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            self._texts -= ticket.texts
            self._bytes -= ticket.nbytes
            self._done.append((time.monotonic(), ticket.texts))
            self._since_trim += ticket.nbytes
            drained = self._texts == 0 and self._since_trim >= TRIM_AFTER_BYTES
            if drained:
                self._since_trim = 0
        if drained and self._on_drained is not None:
            self._on_drained()

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


def fit_cost(batches: deque[tuple[int, int, float]] | list[tuple[int, int, float]]) -> tuple[float, float]:
    """Least squares, no intercept: seconds = a * texts + b * chars, with a, b >= 0. When
    the batches cannot tell the two apart (all alike), all of the cost goes to chars."""
    snn = sum(n * n for n, _, _ in batches)
    scc = sum(c * c for _, c, _ in batches)
    snc = sum(n * c for n, c, _ in batches)
    snt = sum(n * t for n, _, t in batches)
    sct = sum(c * t for _, c, t in batches)
    det = snn * scc - snc * snc
    if det > 1e-9 * snn * scc:
        a = (snt * scc - sct * snc) / det
        b = (sct * snn - snt * snc) / det
        if a >= 0 and b >= 0:
            return a, b
    if scc > 0 and (det <= 1e-9 * snn * scc or snt * scc - sct * snc < 0):
        return 0.0, max(0.0, sct / scc)
    return (max(0.0, snt / snn), 0.0) if snn > 0 else (0.0, 0.0)


def limits_from(max_texts: int, max_mb: float) -> QueueLimits:
    return QueueLimits(max_texts, int(max_mb * MB))
