"""Subprocesses the daemon waits on (conversions, measurements), and stopping them with it.

A conversion or a tuning measurement runs torch in a child process for seconds to minutes.
The daemon must not wait them out when it stops, nor leave them running: each runs
through :func:`run`, which the daemon's shutdown ends with :func:`stop_all` (SIGTERM, then
SIGKILL). A child that runs children of its own calls :func:`stop_all_on_sigterm` first,
so the whole chain ends.

Each child of the daemon leads a process group of its own, and its own children stay in
it: the signals go to the whole group, so a child killed while its Python is inside a long
C call (where its SIGTERM handler cannot run) takes its conversions with it. Once
:func:`stop_all` has run, :func:`run` starts nothing more, so a worker thread that reaches
``run`` late (a loaded machine) cannot leave a child behind a stopped daemon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType

GRACE_SECONDS = 5.0

_lock = threading.Lock()
_running: set[subprocess.Popen[str]] = set()
_ended: set[subprocess.Popen[str]] = set()  # ended by stop_all, not by their own doing
_stopping = False  # stop_all has run: nothing more starts
_group_leader = True  # the daemon: each child leads a group; a child's children stay in its group


class Stopped(Exception):
    """The daemon is stopping: the child was ended, or not started."""


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to the end (capturing its output), unless :func:`stop_all` ends it first.
    Raises subprocess.TimeoutExpired past ``timeout`` (the child is killed) and Stopped."""
    with _lock:
        if _stopping:
            raise Stopped("stopping: the child was not started")
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=_group_leader)
        _running.add(child)
    try:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(child, signal.SIGKILL)
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


def start_accepting() -> None:
    """A daemon starting (in-process ones in tests follow one another): children may run."""
    global _stopping
    with _lock:
        _stopping = False


def stop_all(*, wait: bool = True) -> None:
    """End every running child and start no more: SIGTERM, and with ``wait`` SIGKILL after a
    grace period (``wait=False`` in a signal handler, which must not block)."""
    global _stopping
    with _lock:
        _stopping = True
        children = list(_running)
        _ended.update(children)
    for child in children:
        _signal(child, signal.SIGTERM)
    for child in children if wait else ():
        try:
            child.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        _signal(child, signal.SIGKILL)  # and whatever of its group outlived it


def _signal(child: subprocess.Popen[str], signum: int) -> None:
    """``signum`` to ``child``'s process group where it leads one, else to the child."""
    try:
        if _group_leader:
            os.killpg(child.pid, signum)
        elif child.poll() is None:
            child.send_signal(signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended


def stop_all_on_sigterm() -> None:
    """In a child that runs children: SIGTERM ends them too, then this process. Its children
    stay in its process group, which the daemon signals as a whole."""
    global _group_leader
    _group_leader = False

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
