"""Starting and stopping a daemon from the client side (``hs daemon start``, autostart)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hotswapd.client.connection import Client
from hotswapd.errors import DaemonError, DaemonNotRunning, DaemonTimeout
from hotswapd.host.lockfile import holder_pid
from hotswapd.host.paths import ensure_private_dir, lock_path, state_dir


def daemon_log_path() -> Path:
    return state_dir() / "hotswapd.log"


def prepared_log_path() -> Path:
    """The daemon's log, in its state directory made owner-only (0700) as the daemon makes
    it: created 0755 here, the daemon then warned on its first start that it had tightened
    a directory ``hs`` made a moment before."""
    path = daemon_log_path()
    problem = ensure_private_dir(path.parent)
    if problem is not None:
        raise DaemonError(f"cannot start hotswapd: its log directory {problem}")
    return path


def start_daemon(endpoint: str, config: str | None = None, *, wait_seconds: float = 30.0, http: str | None = None) -> int:
    """Spawn a detached daemon and return its pid once it answers ``ping``."""
    log_path = prepared_log_path()
    command = [sys.executable, "-m", "hotswapd", "--socket", endpoint]
    if config:
        command += ["--config", config]
    if http:
        command += ["--http", http]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the shell that started it
            close_fds=True,
        )
    deadline = time.monotonic() + wait_seconds
    with Client(endpoint, timeout=0.5) as client:
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise DaemonError(f"hotswapd exited with status {code} before answering: {_last_line(log_path)}")
            try:
                client.ping(timeout=0.5)
                return process.pid
            except (DaemonNotRunning, DaemonTimeout):
                client.close()
                time.sleep(0.05)
    raise DaemonTimeout(f"hotswapd (pid {process.pid}) did not answer within {wait_seconds:g} s; see {log_path}")


def stop_daemon(endpoint: str, *, wait_seconds: float = 60.0) -> int | None:
    """Ask the daemon to stop and wait until it has released its endpoint; returns its pid."""
    pid = holder_pid(lock_path(endpoint))
    if pid is None:
        return None
    with Client(endpoint, timeout=5.0) as client:
        client.shutdown()
    deadline = time.monotonic() + wait_seconds
    while holder_pid(lock_path(endpoint)) is not None:
        if time.monotonic() > deadline:
            raise DaemonTimeout(f"hotswapd (pid {pid}) is still draining after {wait_seconds:g} s")
        time.sleep(0.05)
    return pid


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4096))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return f"see {path}"
    return lines[-1] if lines else f"see {path}"
