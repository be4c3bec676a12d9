"""Memory after a burst: what the burst grew is given back once the queue has drained.

A burst of long texts grows the process by hundreds of MiB (activations: attention over 256
tokens in batches of 32) and nothing gives it back by itself: glibc keeps its heap, ONNX
Runtime its arena. Counting the text that went through missed it (16 MB of 1 KB texts grew
RSS by 800 MiB and never reached the 32 MiB of text the trim waited for), so the watch
reads what grew: each time the queue has drained and stayed empty a moment, the process's
RSS is compared with what it was after the last give-back, and past ``GROWTH_BYTES`` the
versions release their arenas and the heap is trimmed. Reading RSS costs one ``/proc``
read, and steady traffic, whose queue keeps filling again, never reaches the check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

MiB = 2**20
GROWTH_BYTES = 32 * MiB


class BurstMemory:
    def __init__(self, read_rss: Callable[[], int], give_back: Callable[[], bool], growth_bytes: int = GROWTH_BYTES) -> None:
        self._read_rss = read_rss
        self._give_back = give_back
        self._growth = growth_bytes
        self._lock = threading.Lock()  # one check at a time (the io pool has several threads)
        self._baseline: int | None = None
        self.given_back = 0  # times it acted (read by tests)

    def settle(self) -> None:
        """What the process holds now is its resting size (the daemon is ready, or a
        version was loaded): growth is counted from here."""
        with self._lock:
            self._baseline = self._read_rss()

    def check(self) -> bool:
        """After a drain: give back what grew past the resting size, if it grew enough.
        False when it should be tried again later: ``give_back`` found the daemon busy (the
        resting size is kept, or the growth would be taken for it)."""
        with self._lock:
            now = self._read_rss()
            if self._baseline is None or now < self._baseline:
                self._baseline = now
                return True
            if now - self._baseline < self._growth:
                return True
            if not self._give_back():
                return False
            after = self._read_rss()
            log.info("gave back memory after a burst: RSS %.0f -> %.0f MiB", now / MiB, after / MiB)
            self.given_back += 1
            self._baseline = after
            return True
