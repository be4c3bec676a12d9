"""The housekeeping thread: config reloads, rollout steps and health checks, ttl expiry.

It used to run on the socket thread, where a slow disk or a big audit log stalled every
client. Here a tick that fails is logged and the next one runs as usual.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, tick: Callable[[], None], every: float, stop: threading.Event) -> None:
        self._tick = tick
        self._every = every
        self._stop = stop
        self._thread = threading.Thread(target=self._loop, name="hotswapd-ticks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 -- housekeeping must outlive any bug
                log.exception("housekeeping tick failed; the next one runs as usual")
