"""Subprocesses the daemon waits on (conversions, measurements), and stopping them with it.

A conversion or a tuning measurement runs torch in a child process for seconds to minutes.
The daemon must not wait them out when it stops, nor leave them running: each runs
through :func:`run`, which the daemon's shutdown ends with :func:`stop_all` (SIGTERM, then
SIGKILL). A child that runs children of its own calls :func:`stop_all_on_sigterm` first,
so the whole chain ends.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from types import FrameType

GRACE_SECONDS = 5.0

_lock = threading.Lock()
_running: set[subprocess.Popen[str]] = set()
_ended: set[subprocess.Popen[str]] = set()  # ended by stop_all, not by their own doing


class Stopped(Exception):
    """The daemon is stopping: the child was ended, or not started."""


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to the end (capturing its output), unless :func:`stop_all` ends it first.
    Raises subprocess.TimeoutExpired past ``timeout`` (the child is killed) and Stopped."""
    with _lock:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _running.add(child)
    try:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
    finally:
        with _lock:
            _running.discard(child)
            ended = child in _ended
            _ended.discard(child)
    if ended:
        raise Stopped("stopping: the child was ended")
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def failure(done: subprocess.CompletedProcess[str]) -> str:
    """One line on why a child failed: its last line of stderr, or the signal that ended it."""
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"ended by {name}"
    return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]


def stop_all(*, wait: bool = True) -> None:
    """End every running child: SIGTERM, and with ``wait`` SIGKILL after a grace period
    (``wait=False`` in a signal handler, which must not block)."""
    with _lock:
        children = list(_running)
        _ended.update(children)
    for child in children:
        child.terminate()
    for child in children if wait else ():
        try:
            child.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()


def stop_all_on_sigterm() -> None:
    """In a child that runs children: SIGTERM ends them too, then this process."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
