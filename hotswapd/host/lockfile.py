"""The lock file that says which daemon owns an endpoint.

The daemon holds an exclusive ``flock`` on it for its whole life and writes its pid into
it. The kernel drops the lock when the process dies, however it dies, so a lock file that
nobody holds (and a socket file beside it) is stale. Clients read it to tell "no daemon"
from "a daemon that is busy".
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from hotswapd.errors import DaemonAlreadyRunning

PROBE_RETRIES = 25
PROBE_RETRY_SECONDS = 0.01


def holder_pid(path: Path) -> int | None:
    """The pid of the live process holding the lock, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _lock_exclusive(fd: int, attempts: int = PROBE_RETRIES) -> None:
    """Take the exclusive lock. A client probing with :func:`holder_pid` holds a shared
    lock for a few microseconds; a daemon starting in that instant must not mistake the
    probe for a running daemon, so a refusal is retried briefly before it counts."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == attempts - 1:
                raise
            time.sleep(PROBE_RETRY_SECONDS)


class LockHeld(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"held by pid {pid}" if pid else "held by another process")
        self.owner = f"pid {pid}" if pid else "another process"


def take_lock(path: Path) -> int:
    """An exclusive lock on ``path`` (created), with this pid written in it: the open
    descriptor, which holds the lock until closed. LockHeld when a live process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(pid) from None
        # The holder unlinks the file before it lets go: a lock won on a file no longer at
        # ``path`` guards nothing (the next comer creates and locks a new one). Try again.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class EndpointLock:
    def __init__(self, path: Path, endpoint: str) -> None:
        self.path = path
        self._endpoint = endpoint
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._fd = take_lock(self.path)
        except LockHeld as held:
            raise DaemonAlreadyRunning(f"another hotswapd ({held.owner}) already serves {self._endpoint}; stop it first (hs daemon stop)") from None

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so a newcomer never locks a file we then delete.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
