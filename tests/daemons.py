"""Start and stop real daemons for tests: a subprocess on a short temp ipc socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotswapd import Client
from hotswapd.errors import DaemonNotRunning, DaemonTimeout

REPO = Path(__file__).resolve().parents[1]


def short_socket_dir() -> Path:
    # ipc:// paths are limited to ~100 bytes: pytest's tmp_path is often longer.
    return Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAPD_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}, **extra)
    return env


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    endpoint: str
    socket_path: Path
    config_path: Path
    log_path: Path

    def client(self, timeout: float = 120.0) -> Client:
        return Client(self.endpoint, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def start_daemon(config_path: Path, workdir: Path, *, wait: float = 60.0, extra_env: dict[str, str] | None = None, socket_dir: Path | None = None) -> RunningDaemon:
    socket_path = (socket_dir or short_socket_dir()) / "d.sock"
    log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
    endpoint = "ipc://" + str(socket_path)
    # Each daemon keeps its audit log and routing state apart unless a test shares them.
    env = {"XDG_STATE_HOME": str(workdir / "state"), **(extra_env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotswapd", "--socket", endpoint, "--config", str(config_path), "--log-level", "debug"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=daemon_env(**env),
            cwd=REPO,
        )
    daemon = RunningDaemon(process, endpoint, socket_path, config_path, log_path)
    wait_until_answering(daemon, wait)
    return daemon


def wait_until_answering(daemon: RunningDaemon, wait: float) -> None:
    deadline = time.monotonic() + wait
    with Client(daemon.endpoint, timeout=0.5) as client:
        while time.monotonic() < deadline:
            if daemon.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.process.returncode}:\n{daemon.log()}")
            try:
                client.ping(timeout=0.5)
                return
            except (DaemonNotRunning, DaemonTimeout):
                client.close()
                time.sleep(0.05)
    raise RuntimeError(f"daemon did not answer within {wait} s:\n{daemon.log()}")


def wait_ready(client: Client, wait: float = 120.0) -> dict[str, object]:
    """Wait until start-up preloads are done."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = client.status()
        if status["phase"] == "ready":
            return status
        time.sleep(0.1)
    raise RuntimeError("daemon never became ready")


def wait_for(probe: Callable[[], Any], condition: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    """Poll ``probe`` until ``condition`` holds for its value; return that value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if condition(value):
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met; last value {value!r}")


@contextmanager
def serving(config_path: Path, workdir: Path, *, ready_within: float = 120.0, **start: Any) -> Iterator[RunningDaemon]:
    """A started daemon, ready (preloads done); stopped at the end, which must exit 0."""
    daemon = start_daemon(config_path, workdir, **start)
    try:
        with daemon.client() as client:
            wait_ready(client, ready_within)
        yield daemon
    finally:
        if daemon.process.poll() is None:
            assert daemon.stop() == 0, daemon.log()
