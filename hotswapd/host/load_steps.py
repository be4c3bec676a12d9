"""What a load is doing now (resolving, exporting, quantising, loading), for `hs` to show.

The registry installs a reporter on the thread that runs a backend's loader; a backend
names each slow step with :func:`report`, and a conversion run in a child process names
its steps in a file the parent watches (:func:`write_step_file`, :func:`watch_step_file`).
Reporting never fails a load: a step is a label, not state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Reporter = Callable[[str], None]
STEP_FILE = "step"  # in a conversion's staging directory: one line, the step it is on
MAX_STEP_CHARS = 80

_local = threading.local()


def current() -> Reporter | None:
    return getattr(_local, "reporter", None)


def report(step: str) -> None:
    """Name the step this thread's load is on (nothing when no one listens)."""
    reporter = current()
    if reporter is not None:
        reporter(step[:MAX_STEP_CHARS])


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Steps reported on this thread go to ``reporter`` while the block runs."""
    before = current()
    _local.reporter = reporter
    try:
        yield
    finally:
        _local.reporter = before


def write_step_file(directory: Path, step: str) -> None:
    """In a conversion's child process: the step it starts now, for the parent to show."""
    try:
        (directory / f".{STEP_FILE}.tmp").write_text(step[:MAX_STEP_CHARS], encoding="utf-8")
        (directory / f".{STEP_FILE}.tmp").replace(directory / STEP_FILE)
    except OSError:  # a label: a full disk shows the conversion's real error soon enough
        pass


@contextmanager
def watch_step_file(directory: Path, reporter: Reporter | None, every: float = 0.2) -> Iterator[None]:
    """While the block runs (a child converting into ``directory``), report each new step
    the child writes there."""
    if reporter is None:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        seen = ""
        while not stop.wait(every):
            try:
                step = (directory / STEP_FILE).read_text(encoding="utf-8", errors="replace")[:MAX_STEP_CHARS].strip()
            except OSError:  # not written yet, or the directory already renamed
                continue
            if step and step != seen:
                seen = step
                reporter(step)

    thread = threading.Thread(target=watch, name="hotswapd-load-steps", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(1.0)
