"""When a request's queued work stops being worth running: its deadline passes, or its
client withdraws it (an HTTP client that disconnected: the router's ``cancel`` op), or the
daemon's drain ends with it unfinished.

One object per request, shared by every stage and piece of it (an ensemble's members
included), so a withdrawal reaches the work wherever it waits: the load queue, the tokens
pool, the batcher. Work already running on the model finishes; nothing after it starts.
"""

from __future__ import annotations

import time

from hotswapd.errors import DeadlineExceeded, HotswapError


class Deadline:
    __slots__ = ("at", "_withdrawn")

    def __init__(self, at: float | None = None) -> None:
        self.at = at  # time.monotonic() past which queued work is dropped unrun; None: none
        self._withdrawn: str | None = None

    @classmethod
    def within(cls, seconds: float | None) -> Deadline:
        return cls(None if seconds is None else time.monotonic() + seconds)

    def withdraw(self, why: HotswapError) -> None:
        """Nobody will take the answer: its client left (:class:`Cancelled`) or the daemon
        stops (``ShuttingDown``). Any thread: a plain store, read by the stages."""
        self._withdrawn = why

    def stopped(self, now: float | None = None) -> HotswapError | None:
        """Why the request's remaining work must not run, or None while it should."""
        if self._withdrawn is not None:
            return self._withdrawn
        if self.at is not None and self.at <= (time.monotonic() if now is None else now):
            return DeadlineExceeded("the request's deadline passed before its work ran; it was not run")
        return None

