"""What the fleet tests run against: a real etcd (Debian's etcd-server) on loopback ports,
a TCP proxy that can be cut (a member partitioned from etcd), and member daemons in their
own processes with the fake backend."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.daemons import REPO, RunningDaemon, daemon_env, short_socket_dir, wait_until_answering
from tests.inproc import fake_source

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def need_etcd() -> None:
    if not Path(ETCD).is_file():
        if os.environ.get("CI"):
            pytest.fail("etcd is not installed; CI must test fleets against it (.ci/run installs etcd-server)")
        pytest.skip("etcd is not installed (apt-get install etcd-server)")


class Etcd:
    """One etcd member on loopback, stopped and started again on the same data."""

    def __init__(self, workdir: Path) -> None:
        self.data = workdir / "etcd-data"
        self.port = free_port()
        self.peer = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            ETCD, "--name", "t", "--data-dir", str(self.data),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{self.peer}",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json().get("health") == "true":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None


@contextmanager
def etcd_server(workdir: Path) -> Iterator[Etcd]:
    need_etcd()
    server = Etcd(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Proxy:
    """A TCP forwarder to ``target``; ``cut()`` closes it and every connection through it
    (a partition), ``heal()`` listens again on the same port; ``freeze()`` cuts what is open
    and then accepts connections without ever answering them (a link that black-holes
    traffic after the handshake, a hung load balancer) until ``thaw()``."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._frozen = False
        self._held: list[socket.socket] = []
        self.heal()

    def freeze(self) -> None:
        with self._lock:
            self._frozen = True
            conns, self._conns = self._conns, []
        for conn in conns:
            _hang_up(conn)

    def thaw(self) -> None:
        with self._lock:
            self._frozen = False

    def heal(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            conns, self._conns = self._conns + self._held, []
            self._held = []
        if server is not None:
            server.close()
        for conn in conns:
            _hang_up(conn)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with self._lock:
                if self._frozen:
                    self._held.append(client)  # accepted, never answered
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for end in (a, b):
                _hang_up(end)


def _hang_up(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def member_config(workdir: Path, fleet: str, member: str, etcd_url: str, versions: dict[str, dict[str, object]], *, active: str = "v1",
                  extra: str = "", fleet_extra: str = "") -> str:
    """A member's config: the fleet section, and one model `m` of fake versions whose files
    are shared by every member (the same fingerprints) unless a version names `own_files`."""
    lines = [extra, "[fleet]", f'name = "{fleet}"', f'etcd = ["{etcd_url}"]', f'member = "{member}"', "lease_seconds = 3", fleet_extra,
             "[models.m]", f'active = "{active}"']
    for version, options in versions.items():
        options = dict(options)
        own = options.pop("own_files", False)
        source = fake_source(workdir / (member if own else "shared"), version)
        if own:  # other bytes: another fingerprint
            (source / "retrained.bin").write_bytes(member.encode() * 64)
        lines += [f"[models.m.versions.{version}]", 'backend = "fake"', f'source = "{source}"']
        for key, value in {"tag": version, **options}.items():
            lines.append(f"{key} = {value!r}".replace("'", '"') if not isinstance(value, bool) else f"{key} = {str(value).lower()}")
    return "\n".join(lines) + "\n"


def start_member(workdir: Path, name: str, config_text: str, *, wait: float = 60.0, env: dict[str, str] | None = None) -> RunningDaemon:
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    config.write_text(config_text)
    endpoint = "ipc://" + str(short_socket_dir() / "d.sock")
    log_path = home / f"daemon-{time.monotonic_ns()}.log"
    env = daemon_env(XDG_STATE_HOME=str(home / "state"), XDG_CACHE_HOME=str(home / "cache"), XDG_CONFIG_HOME=str(home / "config"),
                     XDG_RUNTIME_DIR=str(home / "run"), **(env or {}))
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tests.fleet_member_main", "--socket", endpoint, "--config", str(config), "--log-level", "debug"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    daemon = RunningDaemon(process, endpoint, Path(endpoint.removeprefix("ipc://")), config, log_path)
    wait_until_answering(daemon, wait)
    return daemon


def kill9(daemon: RunningDaemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)


def wait_for(condition, timeout: float = 30.0, what: str = "a condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
