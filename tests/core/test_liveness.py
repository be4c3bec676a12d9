"""Issue 11, item 6: a client learns quickly that its daemon died, and a deleted socket
file is not two contradicting messages."""

from __future__ import annotations

import os
import signal
import threading
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotswapd import Client
from hotswapd.errors import DaemonDied
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.daemons import REPO, RunningDaemon, daemon_env, short_socket_dir, wait_until_answering
from tests.inproc import fake_config

# A real daemon process serving the fake backend (no torch): `kill -9` needs another process.
LAUNCH = "import sys; from hotswapd import backends; backends.BUILTIN['fake'] = 'tests.fakebackend'; from hotswapd.daemon.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
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


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_deleted_socket_file_is_bound_again(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        daemon.socket_path.unlink()
        done = run_hs("status", "--json", endpoint=daemon.endpoint, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
        assert done.returncode == 0, done.stderr
        assert daemon.socket_path.exists()
        assert oct(daemon.socket_path.stat().st_mode & 0o777) == oct(0o600)


def test_a_client_probing_the_lock_does_not_stop_a_daemon_from_starting(tmp_path: Path) -> None:
    """`hs` probes the lock file (a shared flock for microseconds) while a daemon starts:
    the daemon must not take the probe for another daemon."""
    from hotswapd.host.lockfile import EndpointLock, holder_pid

    path = tmp_path / "d.sock.lock"
    path.write_text("")
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            holder_pid(path)

    probers = [threading.Thread(target=probe) for _ in range(2)]
    for thread in probers:
        thread.start()
    try:
        for _ in range(50):
            lock = EndpointLock(path, "ipc://test")
            lock.acquire()
            lock.release()
            path.write_text("")
    finally:
        stop.set()
        for thread in probers:
            thread.join()
