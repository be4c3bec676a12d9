"""Daemons of their own: start, autostart, stop with requests in flight, locks, reload, systemd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hotswapd import Client
from hotswapd.errors import ModelLoadError
from tests.conftest import run_hs
from tests.daemons import REPO, daemon_env, short_socket_dir, start_daemon, wait_for, wait_ready, write_config

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow


def tiny_config(path: Path, tiny_model: Path, *, preload: bool = False, extra: str = "") -> Path:
    return write_config(
        path,
        f"""
[models.tiny]
active = "v1"
[models.tiny.versions.v1]
source = "{tiny_model}"
preload = {str(preload).lower()}
max_seq_length = 256
{extra}
""",
    )


def test_autostart_from_hs_encode_then_stop(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path / "c.toml", tiny_model)
    endpoint = "ipc://" + str(short_socket_dir() / "auto.sock")
    env = {"HOTSWAPD_CONFIG": str(config), "XDG_STATE_HOME": str(tmp_path / "state"), "HOTSWAPD_NO_AUTOSTART": ""}
    try:
        first = run_hs("encode", "autostarted", "-f", "jsonl", endpoint=endpoint, env=env)
        assert first.returncode == 0, first.stderr
        assert b"starting hotswapd" in first.stderr
        assert len(__import__("json").loads(first.stdout)["embedding"]) == 32
        second = run_hs("encode", "warm now", endpoint=endpoint, env=env)
        assert second.returncode == 0 and second.stderr == b""
    finally:
        stopped = run_hs("daemon", "stop", endpoint=endpoint, env=env)
    assert stopped.returncode == 0 and b"stopped hotswapd" in stopped.stdout
    assert not Path(endpoint[6:]).exists()
    assert (tmp_path / "state" / "hotswapd" / "hotswapd.log").exists()


def test_daemon_start_command_returns_once_answering(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path / "c.toml", tiny_model)
    endpoint = "ipc://" + str(short_socket_dir() / "s.sock")
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    started = run_hs("--config", str(config), "daemon", "start", endpoint=endpoint, env=env)
    try:
        assert started.returncode == 0 and b"started hotswapd (pid" in started.stdout
        with Client(endpoint, timeout=5) as client:
            assert client.ping()["pong"]
        again = run_hs("daemon", "start", endpoint=endpoint, env=env)
        assert again.returncode == 0 and b"already running" in again.stdout
        # --http applies at start: against a running daemon it is an error that says how,
        # never a silent exit 0 (issue 29).
        refused = run_hs("daemon", "start", "--http", "127.0.0.1:18080", endpoint=endpoint, env=env)
        assert refused.returncode == 2 and b"serves no HTTP endpoint" in refused.stderr and b"hs daemon stop" in refused.stderr
    finally:
        run_hs("daemon", "stop", endpoint=endpoint, env=env)


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path, tiny_model: Path) -> None:
    daemon = start_daemon(tiny_config(tmp_path / "c.toml", tiny_model, preload=True), tmp_path)
    texts = [" ".join(f"word{i}x{j}" for j in range(200)) for i in range(400)]
    outcome: dict[str, object] = {}

    def encode() -> None:
        with daemon.client() as own:
            # A long deadline: on a loaded machine admission may price 400 long texts past a
            # short one and refuse them at once (then nothing is ever in flight).
            outcome["result"] = own.encode(texts, timeout=900).embeddings.copy()

    with daemon.client() as client:
        wait_ready(client)
        worker = threading.Thread(target=encode)
        worker.start()
        deadline = time.monotonic() + 30
        while client.status()["in_flight"] == 0:
            assert time.monotonic() < deadline, "request never went in flight"
        daemon.process.send_signal(signal.SIGTERM)
        worker.join(120)
    assert daemon.process.wait(60) == 0, daemon.log()
    assert outcome["result"].shape == (400, 32)  # type: ignore[union-attr]
    assert not daemon.socket_path.exists()
    assert "stopping: finishing 1 request(s) in flight" in daemon.log()


def test_second_daemon_on_same_socket_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    daemon = start_daemon(tiny_config(tmp_path / "c.toml", tiny_model), tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "hotswapd", "--socket", daemon.endpoint, "--config", str(daemon.config_path)],
            capture_output=True, env=daemon_env(), timeout=60, cwd=REPO,
        )
        assert second.returncode == 1
        assert f"already serves {daemon.endpoint}".encode() in second.stderr
        assert str(daemon.process.pid).encode() in second.stderr
        with daemon.client() as client:
            assert client.ping()["pid"] == daemon.process.pid
    finally:
        assert daemon.stop() == 0


def test_stale_socket_file_is_recovered(tmp_path: Path, tiny_model: Path) -> None:
    socket_dir = short_socket_dir()
    stale = socket_dir / "d.sock"
    with socket.socket(socket.AF_UNIX) as leftover:  # a socket file nobody listens on
        leftover.bind(str(stale))
    assert stale.exists()
    with Client("ipc://" + str(stale), timeout=1) as client:
        with pytest.raises(Exception, match="stale socket file"):
            client.ping()
    daemon = start_daemon(tiny_config(tmp_path / "c.toml", tiny_model), tmp_path, socket_dir=socket_dir)
    try:
        assert "removing stale socket" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_killed_daemon_leaves_nothing_that_blocks_a_new_one(tmp_path: Path, tiny_model: Path) -> None:
    socket_dir = short_socket_dir()
    config = tiny_config(tmp_path / "c.toml", tiny_model)
    first = start_daemon(config, tmp_path, socket_dir=socket_dir)
    first.process.kill()
    first.process.wait()
    assert first.socket_path.exists()
    second = start_daemon(config, tmp_path, socket_dir=socket_dir)
    assert second.stop() == 0


def test_socket_is_owner_only(tmp_path: Path, tiny_model: Path) -> None:
    daemon = start_daemon(tiny_config(tmp_path / "c.toml", tiny_model), tmp_path)
    try:
        assert daemon.socket_path.stat().st_mode & 0o777 == 0o600
    finally:
        daemon.stop()


def test_broken_config_at_start_exits_with_a_clear_error(tmp_path: Path) -> None:
    broken = write_config(tmp_path / "c.toml", "[models.x\nactive = 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "hotswapd", "--socket", str(short_socket_dir() / "x.sock"), "--config", str(broken)],
        capture_output=True, env=daemon_env(), timeout=60,
    )
    assert done.returncode == 2
    assert f"{broken}: not valid TOML".encode() in done.stderr


def test_missing_model_path_is_a_typed_error_and_the_daemon_keeps_serving(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(
        tmp_path / "c.toml", tiny_model,
        extra='[models.ghost]\nactive = "v1"\n[models.ghost.versions.v1]\nsource = "/nonexistent/model"\npreload = true\n',
    )
    daemon = start_daemon(config, tmp_path)
    try:
        with daemon.client() as client:
            wait_ready(client)
            with pytest.raises(ModelLoadError, match="/nonexistent/model does not exist"):
                client.encode(["x"], model="ghost")
            ghost = {row["name"]: row for row in client.models()}["ghost"]
            assert not ghost["loaded"] and "does not exist" in ghost["last_error"]
            assert client.encode(["fine"], model="tiny").dim == 32
    finally:
        assert daemon.stop() == 0


def test_sighup_reload_rejects_a_bad_config_and_applies_the_next_good_one(tmp_path: Path, tiny_model: Path) -> None:
    config = tiny_config(tmp_path / "c.toml", tiny_model, preload=True)
    good_text = config.read_text()
    daemon = start_daemon(config, tmp_path)
    try:
        with daemon.client() as client:
            wait_ready(client)
            before = client.encode(["stable"]).embeddings.copy()
            config.write_text("[models.tiny]\nactive = 'v9'\n")
            daemon.process.send_signal(signal.SIGHUP)
            status = wait_for(lambda: client.status(), lambda s: s["config_error"])
            assert status["config_error"] == f"{config}: models.tiny.versions: Field required"
            np.testing.assert_array_equal(client.encode(["stable"]).embeddings, before)

            config.write_text(good_text.replace("models.tiny", "models.tiny2") + good_text)
            daemon.process.send_signal(signal.SIGHUP)
            wait_for(lambda: client.models(), lambda rows: len(rows) == 2)
            assert client.status()["config_error"] is None
            assert client.encode(["x"], model="tiny2").dim == 32
    finally:
        assert daemon.stop() == 0


def test_systemd_notify_ready_and_stopping(tmp_path: Path, tiny_model: Path) -> None:
    notify_path = short_socket_dir() / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        daemon = start_daemon(
            tiny_config(tmp_path / "c.toml", tiny_model), tmp_path, extra_env={"NOTIFY_SOCKET": str(notify_path)}
        )
        ready = notify.recv(4096).decode()
        assert ready.startswith("READY=1")
        assert daemon.socket_path.exists()  # READY comes after the socket is bound
        daemon.process.send_signal(signal.SIGTERM)
        assert notify.recv(4096).decode() == "STOPPING=1"
        assert daemon.process.wait(30) == 0


def test_second_signal_forces_exit(tmp_path: Path, tiny_model: Path) -> None:
    daemon = start_daemon(tiny_config(tmp_path / "c.toml", tiny_model), tmp_path)
    os.kill(daemon.process.pid, signal.SIGINT)
    os.kill(daemon.process.pid, signal.SIGINT)
    assert daemon.process.wait(30) in (0, 1)
