"""The alert queue and its thread: the audit log's listener hands events here."""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import subprocess
import threading
import time
from typing import Any

from hotswapd.alerts.deliver import kill_group, post_webhook, run_command
from hotswapd.config.alerts_section import AlertsConfig

log = logging.getLogger(__name__)
STOP_WAIT_SECONDS = 5.0


class Alerts:
    def __init__(self, settings: AlertsConfig) -> None:
        self._settings = settings
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(settings.max_pending)
        self._commands: list[subprocess.Popen[bytes]] = []  # the alert command running, for stop
        self._stop = threading.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="hotswapd-alerts", daemon=True)
        self._thread.start()

    def reconfigure(self, settings: AlertsConfig) -> None:
        """A reloaded config's hooks apply to the next alert (the queue's bound stays)."""
        self._settings = settings

    def notify(self, event: str, **fields: Any) -> None:
        """Queue an alert for ``event`` if it is one to alert on; never blocks."""
        settings = self._settings
        if not settings.enabled or event not in settings.events:
            return
        body = {"event": event, "ts": round(time.time(), 3), "host": socket.gethostname(), "pid": os.getpid(), **fields}
        try:
            self._queue.put_nowait((event, json.dumps(body, default=str, sort_keys=True).encode()))
        except queue.Full:
            self.dropped += 1
            log.warning("alert queue full (%d pending): dropped the %s alert", settings.max_pending, event)

    def stop(self) -> None:
        """Deliver what is queued for a few seconds more, then stop."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(STOP_WAIT_SECONDS)
        for child in list(self._commands):  # a hook still running ends with the daemon
            kill_group(child)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._deliver(*item)
            except Exception:  # noqa: BLE001 -- the alert thread outlives any hook
                self.failed += 1
                log.exception("delivering an alert failed")

    def _deliver(self, event: str, body: bytes) -> None:
        settings = self._settings  # the hooks configured now: a reload that removed them stops them
        if not settings.enabled or event not in settings.events:
            return
        ok = True
        if settings.command:
            ok = run_command(settings, body, self._commands) and ok
        if settings.webhook:
            ok = post_webhook(settings, body, self._stop) and ok
        if ok:
            self.sent += 1
        else:
            self.failed += 1
