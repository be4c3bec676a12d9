"""Delivering one alert: a command with the event on stdin, a JSON POST to a webhook.

The webhook is posted with the standard library's urllib (one small JSON POST needs no
HTTP client library in the daemon's core). A 5xx answer, a 429, a timeout or a refused
connection is retried with a doubling pause; a 4xx or a redirect is not (the alert would
be lost as a body-less GET). Each attempt runs on a helper thread the alert thread waits
for at most ``timeout_seconds``, so a server that trickles its answer cannot hold alerts
up; the webhook's path and query (tokens) never reach the log.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from hotswapd import __version__
from hotswapd.config.alerts_section import AlertsConfig

log = logging.getLogger(__name__)
FIRST_PAUSE_SECONDS = 0.5
STDERR_TAIL_BYTES = 4096
MAX_ABANDONED = 4  # attempts still hung on a server; past this, webhooks wait for them to end

_abandoned = threading.Semaphore(MAX_ABANDONED)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx becomes an HTTPError: not followed


_opener = urllib.request.build_opener(_NoRedirects)


def where(url: str) -> str:
    """The webhook as the log may show it: scheme and host, no path or query (tokens)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}"


def run_command(settings: AlertsConfig, body: bytes, running: list[subprocess.Popen[bytes]]) -> bool:
    """Run the command with ``body`` on stdin in a process group of its own; True when it
    exits 0. Its stdout is discarded and only the tail of its stderr kept (a command that
    prints gigabytes must not fill the daemon's memory); at the timeout the whole group is
    killed, children included. ``running`` lets the daemon's stop kill it too."""
    assert settings.command is not None
    with tempfile.TemporaryFile() as stderr:
        try:
            child = subprocess.Popen(settings.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        except OSError as exc:  # not found, not executable
            log.warning("alert command %s could not run: %s", settings.command[0], exc)
            return False
        running.append(child)
        try:
            try:
                child.communicate(body, timeout=settings.timeout_seconds)
            except subprocess.TimeoutExpired:
                kill_group(child)
                log.warning("alert command %s took over %.0f s and was killed", settings.command[0], settings.timeout_seconds)
                return False
        finally:
            running.remove(child)
        if child.returncode != 0:
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - STDERR_TAIL_BYTES))
            tail = stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            log.warning("alert command %s exited %d: %s", settings.command[0], child.returncode, tail[0][:300])
            return False
    return True


def kill_group(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def post_webhook(settings: AlertsConfig, body: bytes, stop: threading.Event) -> bool:
    """POST ``body`` to the webhook, retrying what may pass later; True on a 2xx."""
    assert settings.webhook is not None
    pause = FIRST_PAUSE_SECONDS
    for attempt in range(settings.retries + 1):
        retry, why = _attempt(settings, body)
        if why is None:
            return True
        if not retry or attempt == settings.retries:
            log.warning("alert webhook %s failed after %d attempt(s): %s", where(settings.webhook), attempt + 1, why)
            return False
        if stop.wait(pause):  # the daemon is stopping: no more pauses
            return False
        pause *= 2
    return False


def _attempt(settings: AlertsConfig, body: bytes) -> tuple[bool, str | None]:
    """(worth retrying, why it failed or None) of one POST, given ``timeout_seconds`` in all."""
    outcome: list[tuple[bool, str | None]] = []
    if not _abandoned.acquire(timeout=settings.timeout_seconds):
        return True, f"{MAX_ABANDONED} earlier attempts are still hung on the server"

    def post() -> None:
        try:
            outcome.append(_post(settings, body))
        finally:
            _abandoned.release()

    thread = threading.Thread(target=post, name="hotswapd-alert-post", daemon=True)
    thread.start()
    thread.join(settings.timeout_seconds + 0.5)
    return outcome[0] if outcome else (True, f"no answer within {settings.timeout_seconds:g} s")


def _post(settings: AlertsConfig, body: bytes) -> tuple[bool, str | None]:
    assert settings.webhook is not None
    request = urllib.request.Request(
        settings.webhook, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": f"hotswapd/{__version__}"}
    )
    try:
        with _opener.open(request, timeout=settings.timeout_seconds):
            return False, None  # the status is the answer: the body is not read
    except urllib.error.HTTPError as exc:
        return exc.code >= 500 or exc.code == 429, f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return True, str(getattr(exc, "reason", exc))[:200]
