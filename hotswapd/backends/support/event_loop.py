"""An asyncio event loop on a thread of its own, for a backend that calls out over the
network from the daemon's (synchronous) inference and recheck threads.

Why a loop and not a blocking client: a deadline on a coroutine cancels it wherever it is
blocked (connecting, reading the head, reading the body); a blocking socket read can only
be bounded per read, which a remote trickling a byte at a time never trips.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
CLOSE_SECONDS = 5.0


class LoopThread:
    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the loop and wait for it (the caller's thread blocks, the loop does not)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def close(self, last: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run ``last`` (closing a client), then stop the loop and its thread."""
        if last is not None:
            try:
                asyncio.run_coroutine_threadsafe(last, self._loop).result(CLOSE_SECONDS)
            except Exception:
                log.debug("closing on %s failed", self._thread.name, exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()
