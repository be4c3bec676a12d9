"""The daemon's core in this process: the real Daemon (router, handlers, switchboard,
batcher, registry) on a short temp ipc socket, serving the fake backend.

No subprocess and no torch: a daemon starts in milliseconds, and a test reaches into the
fake backend's controls to force a race deterministically (hold a batch, evict, release).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotswapd import Client, backends
from hotswapd.config.schema import load_config
from hotswapd.config.origin import origin_for
from hotswapd.daemon.main import Daemon
from hotswapd.errors import DaemonNotRunning, DaemonTimeout
from tests import fakebackend
from tests.daemons import short_socket_dir

FAKE = "tests.fakebackend"


@dataclass
class InprocDaemon:
    daemon: Daemon
    endpoint: str
    config_path: Path
    workdir: Path

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.endpoint, timeout=timeout)

    def rewrite_config(self, text: str) -> dict[str, object]:
        """Replace the config file and apply it now (as `hs config reload`)."""
        self.config_path.write_text(text)
        with self.client() as client:
            return client.reload_config()

    @property
    def socket_path(self) -> Path:
        return Path(self.endpoint.removeprefix("ipc://"))


def fake_source(workdir: Path, name: str) -> Path:
    """A directory of 'weights' for a fake version (its own bytes: its own fingerprint)."""
    path = workdir / "weights" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_bytes(name.encode() * 64)
    return path


@contextmanager
def inproc_daemon(config_text: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, *, ready: bool = True, endpoint: str | None = None, drain_seconds: float = 10.0) -> Iterator[InprocDaemon]:
    monkeypatch.setitem(backends.BUILTIN, "fake", FAKE)
    monkeypatch.setenv("XDG_STATE_HOME", str(workdir / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    fakebackend.reset()
    config_path = workdir / "config.toml"
    config_path.write_text(config_text)
    origin = origin_for(str(config_path), config_path, missing_ok=False)
    endpoint = endpoint or "ipc://" + str(short_socket_dir() / "d.sock")
    daemon = Daemon(load_config(config_path), origin, endpoint, drain_seconds=drain_seconds)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001 -- reported by the fixture
            failure.append(exc)

    thread = threading.Thread(target=run, name="inproc-daemon", daemon=True)
    thread.start()
    handle = InprocDaemon(daemon, endpoint, config_path, workdir)
    _wait_answering(handle, thread, failure)
    if ready:
        _wait_ready(handle)
    try:
        yield handle
    finally:
        daemon.request_stop()
        thread.join(30)
        for control in fakebackend.CONTROLS.values():  # never leave a worker parked on a gate
            for gate in (control.gate, control.load_gate):
                if gate is not None:
                    gate.set()
        assert not thread.is_alive(), "in-process daemon did not stop"
        assert not failure, failure
        from hotswapd.host import children

        children.start_accepting()  # the stopped daemon was this test's, not the process's next code's


def _wait_answering(handle: InprocDaemon, thread: threading.Thread, failure: list[BaseException]) -> None:
    deadline = time.monotonic() + 10
    with Client(handle.endpoint, timeout=0.5) as client:
        while time.monotonic() < deadline:
            if failure or not thread.is_alive():
                raise RuntimeError(f"in-process daemon failed to start: {failure}")
            try:
                client.ping(timeout=0.5)
                return
            except (DaemonNotRunning, DaemonTimeout):
                client.close()
                time.sleep(0.02)
    raise RuntimeError("in-process daemon did not answer")


def _wait_ready(handle: InprocDaemon) -> None:
    deadline = time.monotonic() + 10
    with handle.client() as client:
        while time.monotonic() < deadline:
            if client.status()["phase"] == "ready":
                return
            time.sleep(0.01)
    raise RuntimeError("in-process daemon never became ready")


def fake_config(workdir: Path, versions: dict[str, dict[str, object]], *, active: str | None = None, model: str = "m", extra: str = "") -> str:
    """A config with one model of fake versions: {version: {option: value}} (tag defaults to the version)."""
    lines = [extra, f"[models.{model}]", f'active = "{active or next(iter(versions))}"']
    for version, options in versions.items():
        lines.append(f"[models.{model}.versions.{version}]")
        lines.append('backend = "fake"')
        lines.append(f'source = "{fake_source(workdir, version)}"')
        for key, value in {"tag": version, **options}.items():
            lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
