"""What a load is doing now (resolving, exporting, quantising, loading), for `hs` to show.

The registry installs a reporter on the thread that runs a backend's loader; a backend
names each slow step with :func:`report`, and a conversion run in a child process names
its steps in a file the parent watches (:func:`write_step_file`, :func:`watch_step_file`).
Reporting never fails a load: a step is a label, not state.
"""

from __future__ import annotations

import os
import stat
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
            step = _read_step(directory / STEP_FILE)
            if step is None:  # not written yet, the directory already renamed, or not a file
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


def _read_step(path: Path) -> str | None:
    """The step a child wrote, read without blocking (a FIFO put there) and bounded (a huge
    file); None when there is no regular file to read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 4 * MAX_STEP_CHARS).decode("utf-8", errors="replace")[:MAX_STEP_CHARS].strip()
    except OSError:
        return None
    finally:
        os.close(fd)
