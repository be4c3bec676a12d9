"""Delivering one alert: a command with the event on stdin, a JSON POST to a webhook.

The webhook is posted with the standard library's urllib (one small JSON POST needs no
HTTP client library in the daemon's core). A 5xx answer, a 429, a timeout or a refused
connection is retried with a doubling pause; a 4xx is not (retrying would not change it).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import urllib.error
import urllib.request

from hotswapd import __version__
from hotswapd.alerts.settings import AlertsConfig

log = logging.getLogger(__name__)
FIRST_PAUSE_SECONDS = 0.5


def run_command(settings: AlertsConfig, body: bytes) -> bool:
    """Run the command with ``body`` on stdin; True when it exits 0."""
    assert settings.command is not None
    try:
        done = subprocess.run(settings.command, input=body, capture_output=True, timeout=settings.timeout_seconds, check=False)
    except subprocess.TimeoutExpired:
        log.warning("alert command %s took over %.0f s and was killed", settings.command[0], settings.timeout_seconds)
        return False
    except OSError as exc:  # not found, not executable
        log.warning("alert command %s could not run: %s", settings.command[0], exc)
        return False
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        log.warning("alert command %s exited %d: %s", settings.command[0], done.returncode, tail[0][:300])
        return False
    return True


def post_webhook(settings: AlertsConfig, body: bytes, stop: threading.Event) -> bool:
    """POST ``body`` to the webhook, retrying what may pass later; True on a 2xx."""
    assert settings.webhook is not None
    pause = FIRST_PAUSE_SECONDS
    for attempt in range(settings.retries + 1):
        request = urllib.request.Request(
            settings.webhook, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": f"hotswapd/{__version__}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:  # noqa: S310 -- the scheme is checked at config
                response.read(1 << 16)
                return True
        except urllib.error.HTTPError as exc:
            retry = exc.code >= 500 or exc.code == 429
            why = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            retry, why = True, str(getattr(exc, "reason", exc))
        if not retry or attempt == settings.retries:
            log.warning("alert webhook %s failed after %d attempt(s): %s", settings.webhook, attempt + 1, why)
            return False
        if stop.wait(pause):  # the daemon is stopping: no more pauses
            return False
        pause *= 2
    return False
