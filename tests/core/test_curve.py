"""Issue 12: TCP endpoints are CURVE-secured; only authorised keys get in, and the audit log names them."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import zmq
import zmq.auth

from hotswapd.errors import ConfigError
from hotswapd.wire.protocol import encode_request
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def tcp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_RUNTIME_DIR": str(tmp_path / "run-not-created-yet")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def hs_keys(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_hs("keys", *args, env=env)


def test_tcp_without_keys_is_refused_with_what_to_do(start: StartDaemon, tmp_path: Path, tcp_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="hs keys init"):
        with start(fake_config(tmp_path, {"v1": {}}), endpoint=f"tcp://127.0.0.1:{free_port()}"):
            pass


def test_only_authorised_keys_get_in_and_switches_name_their_key(start: StartDaemon, tmp_path: Path, tcp_env: dict[str, str]) -> None:
    assert hs_keys(tcp_env, "init").returncode == 0
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    stranger_dir = tmp_path / "stranger"
    stranger_dir.mkdir()
    public_file, secret_file = zmq.auth.create_certificates(str(stranger_dir), "stranger")
    stranger_public, stranger_secret = zmq.auth.load_certificate(secret_file)
    server_public, _ = zmq.auth.load_certificate(str(tmp_path / "config" / "hotswapd" / "keys" / "server.key"))

    def stranger_ping() -> bool:
        context = zmq.Context.instance()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = stranger_public, stranger_secret, server_public
        sock.connect(endpoint)
        try:
            sock.send_multipart(encode_request("s-1", "ping"))
            return bool(sock.poll(1500))
        finally:
            sock.close()

    with start(fake_config(tmp_path, {"v1": {}, "v2": {}}), endpoint=endpoint) as daemon, daemon.client() as client:
        assert client.encode(["over tcp"]).version == "v1"
        client.switch("m", "v2")
        switch = [entry for entry in client.history("m") if entry["event"] == "switch"][-1]
        assert switch["client"] == "local"
        assert not stranger_ping(), "a client with an unknown key was answered"
        assert hs_keys(tcp_env, "add", "stranger", stranger_public.decode()).returncode == 0
        assert stranger_ping(), "an authorised key was refused"
        listed = hs_keys(tcp_env, "list", "--json")
        assert b'"stranger"' in listed.stdout and b'"local"' in listed.stdout
    keys = tmp_path / "config" / "hotswapd" / "keys"
    assert oct(keys.stat().st_mode & 0o777) == oct(0o700)
    assert oct((keys / "server.key_secret").stat().st_mode & 0o777) == oct(0o600)


def test_bad_key_input_is_one_line(tcp_env: dict[str, str]) -> None:
    done = hs_keys(tcp_env, "add", "x", "not-a-key")
    assert done.returncode == 2 and len(done.stderr.decode().strip().splitlines()) == 1


def test_a_key_that_begins_with_a_dash_is_a_key_not_an_option(tcp_env: dict[str, str]) -> None:
    import zmq

    # Began with "-" and held an "h": read as options (-h: help) and not added, exit 0.
    public = next(key for key in (zmq.curve_keypair()[0] for _ in range(20000)) if key.startswith(b"-") and b"h" in key)
    done = hs_keys(tcp_env, "add", "dash", public.decode())
    assert done.returncode == 0, done.stderr
    assert b'"dash"' in hs_keys(tcp_env, "list", "--json").stdout
