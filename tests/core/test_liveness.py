"""Issue 11, item 6: a client learns quickly that its daemon died, and a deleted socket
file is not two contradicting messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotswapd import Client
from hotswapd.errors import DaemonDied
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.daemons import REPO, daemon_env, short_socket_dir, wait_until_answering, RunningDaemon
from tests.inproc import fake_config

# A real daemon process serving the fake backend (no torch): `kill -9` needs another process.
LAUNCH = "import sys; from hotswapd import backends; backends.BUILTIN['fake'] = 'tests.fakebackend'; from hotswapd.daemon.main import main; sys.exit(main(sys.argv[1:]))"


def test_a_waiting_client_learns_within_two_seconds_that_the_daemon_died(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(fake_config(tmp_path, {"v1": {"sleep_seconds": 30.0}}))
    endpoint = "ipc://" + str(short_socket_dir() / "d.sock")
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--socket", endpoint, "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=daemon_env(XDG_STATE_HOME=str(tmp_path / "state")),
    )
    try:
        wait_until_answering(RunningDaemon(process, endpoint, Path(), config, tmp_path / "daemon.log"), 30)
        with Client(endpoint, timeout=60) as client:
            request = client.send("encode", payload=[b"never answered"])
            time.sleep(0.3)
            process.send_signal(signal.SIGKILL)
            started = time.monotonic()
            with pytest.raises(DaemonDied, match="died while 'encode' was waiting"):
                client.receive(request)
            assert time.monotonic() - started < 2.0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        log.close()


def test_a_deleted_socket_file_is_bound_again(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        daemon.socket_path.unlink()
        done = run_hs("status", "--json", endpoint=daemon.endpoint, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
        assert done.returncode == 0, done.stderr
        assert daemon.socket_path.exists()
        assert oct(daemon.socket_path.stat().st_mode & 0o777) == oct(0o600)
