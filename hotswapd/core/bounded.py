"""Loads that cannot wedge the daemon: the slow parts run on a thread of their own, waited
for at most ``daemon.load_timeout_seconds``, and abandoned when the daemon stops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hotswapd.errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Hung:
    """Loads abandoned while still running, by name: a retry does not start another thread
    on the same hung mount (each would stay blocked, and load outside the budget)."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._lock = threading.Lock()

    def check(self, what: str, timeout: float) -> None:
        with self._lock:
            if what in self._names:
                raise ModelLoadError(
                    f"loading {what}: an earlier load, abandoned after {timeout:g} s (daemon.load_timeout_seconds), "
                    "is still running; not starting another until it ends"
                )

    def add(self, what: str) -> None:
        with self._lock:
            self._names.add(what)

    def discard(self, what: str) -> None:
        with self._lock:
            self._names.discard(what)


HUNG = _Hung()


def run_bounded(work: Callable[[], T], what: str, started: float, timeout: float, stopping: threading.Event) -> T:
    """Run a slow part of a load on a thread of its own and wait for it at most until
    ``daemon.load_timeout_seconds`` after the load began, or until the daemon stops.
    Past that the load fails with a typed error and is abandoned: a thread blocked on a
    hung mount cannot be killed, but it no longer holds up the daemon; whatever it
    loads later is closed, and no second load of the same version starts meanwhile."""
    HUNG.check(what, timeout)
    box: dict[str, Any] = {}
    done = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        try:
            value = work()
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting caller
            with lock:
                abandoned = box.get("abandoned", False)
                box["error"] = exc
        else:
            with lock:
                abandoned = box.get("abandoned", False)
                box["value"] = value
            if abandoned:
                _close_quietly(value)
        if abandoned:
            HUNG.discard(what)
        done.set()

    threading.Thread(target=run, name=f"hotswapd-load-{what}", daemon=True).start()
    while not done.wait(0.1):
        late = time.perf_counter() - started > timeout
        if late or stopping.is_set():
            with lock:
                finished = "value" in box or "error" in box
                if not finished:
                    box["abandoned"] = True
                    HUNG.add(what)
            if finished:
                break  # it finished as the time ran out: take its result, do not leak it
            why = f"took longer than {timeout:g} s (daemon.load_timeout_seconds)" if late else "was abandoned: the daemon is stopping"
            raise ModelLoadError(f"loading {what} {why}")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _close_quietly(value: Any) -> None:
    """Close whatever embedder an abandoned load produced after all."""
    for item in value if isinstance(value, tuple) else (value,):
        close = getattr(item, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 -- it was abandoned; nothing depends on it
                log.exception("closing an abandoned load failed")
