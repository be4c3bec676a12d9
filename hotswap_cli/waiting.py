"""Feedback on a wait: a spinner on stderr naming what `hs` waits for and the step the
daemon is on (resolving, converting, exporting, quantising, loading, warming up, checking).

Shown only when stderr is a terminal and the wait has lasted WAIT_SHOWN_AFTER; the steps
come from `models` (each version's ``loading``), asked on a connection of its own every
POLL_SECONDS, so the request being waited for is untouched. Nothing here can fail the
command: a poll that fails just shows no step.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

WAIT_SHOWN_AFTER = 1.0  # seconds: shorter waits stay silent
POLL_SECONDS = 0.25  # at least four updates a second
SHOWN_AFTER_ENV = "HS_WAIT_SHOWN_AFTER"  # the tests show it at once


class Wait:
    """What is waited for; ``doing`` changes the label as the command moves on."""

    def __init__(self, label: str) -> None:
        self.label = label

    def doing(self, label: str) -> None:
        self.label = label


@contextmanager
def waiting(settings: Any, label: str, model: str | None = None) -> Iterator[Wait]:
    """Around a request that may wait on a load: ``label`` and, after a second, the daemon's
    step for ``model`` (every model's, when None) with the seconds spent."""
    wait = Wait(label)
    if not sys.stderr.isatty():
        yield wait
        return
    stop = threading.Event()
    thread = threading.Thread(target=_show, args=(settings, wait, model, stop), name="hs-waiting", daemon=True)
    thread.start()
    try:
        yield wait
    finally:
        stop.set()
        thread.join(2.0)


def _shown_after() -> float:
    try:
        return max(0.0, float(os.environ.get(SHOWN_AFTER_ENV, WAIT_SHOWN_AFTER)))
    except ValueError:
        return WAIT_SHOWN_AFTER


def _show(settings: Any, wait: Wait, model: str | None, stop: threading.Event) -> None:
    started = time.monotonic()
    if stop.wait(_shown_after()):
        return
    from rich.console import Console

    from hotswapd.client.connection import Client

    client: Client | None = None
    try:
        with Console(stderr=True).status(wait.label, spinner="dots") as status:
            while not stop.is_set():
                if client is None:
                    client = Client(settings.socket, timeout=1.0)
                steps = _steps(client, model)
                elapsed = f"{time.monotonic() - started:.0f} s"
                status.update(f"{wait.label}: {steps} ({elapsed})" if steps else f"{wait.label} ({elapsed})")
                stop.wait(POLL_SECONDS)
    except Exception:  # noqa: BLE001 -- a display: the command's own outcome is what counts
        pass
    finally:
        if client is not None:
            client.close()


def _steps(client: Any, model: str | None) -> str:
    """"minilm@v2 exporting to ONNX", for every version of ``model`` on a step now."""
    try:
        rows = client.models()
    except Exception:  # noqa: BLE001 -- a daemon still starting, or busy: no step to show
        return "starting the daemon" if not _running(client) else ""
    found = [
        f"{row['name']}@{item['version']} {item['loading']['step']}"
        for row in rows
        if model is None or row["name"] == model
        for item in row.get("version_detail", [])
        if item.get("loading")
    ]
    return "; ".join(found)


def _running(client: Any) -> bool:
    try:
        client.check_daemon()
    except Exception:  # noqa: BLE001 -- not (yet) answering
        return False
    return True
