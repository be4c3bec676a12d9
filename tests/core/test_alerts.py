"""Alerts (issue 18, item 2): the configured command and webhook hear of a failed load and a
rejected config, against a real local HTTP receiver and a real command; a slow, failing or
unreachable hook never holds up serving, and the queue is bounded."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotswapd.errors import ConfigError, HotswapError
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each POST and answers with the next status."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.requests = 0
        self.statuses: list[int] = []
        self.delay = 0.0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _wait(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def _alerts(tmp_path: Path, receiver: Receiver, **extra: object) -> str:
    record = tmp_path / "alerts.jsonl"
    command = [sys.executable, "-c", f"import sys; open({str(record)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"]
    lines = ["[alerts]", f"command = {json.dumps(command)}", f'webhook = "{receiver.url}"', "timeout_seconds = 2"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def _commanded(tmp_path: Path) -> list[dict]:
    path = tmp_path / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_failed_load_and_a_rejected_config_reach_the_command_and_the_webhook(start: StartDaemon, tmp_path: Path, receiver: Receiver) -> None:
    config = fake_config(tmp_path, {"v1": {}, "bad": {}}, extra=_alerts(tmp_path, receiver))
    with start(config) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["bad"].fail_load = "weights are gone"
        with pytest.raises(HotswapError, match="weights are gone"):
            client.encode(["x"], "m@bad")
        _wait(lambda: receiver.bodies and _commanded(tmp_path))
        for alert in (receiver.bodies[0], _commanded(tmp_path)[0]):
            assert alert["event"] == "load_failed" and alert["model"] == "m" and alert["version"] == "bad"
            assert "weights are gone" in alert["reason"] and alert["pid"] > 0 and alert["ts"] > 0
        client.encode(["x"], "m@v1")  # a load, not an alert
        with pytest.raises(ConfigError):
            inproc.rewrite_config(config.replace('active = "v1"', 'active = "nope"'))
        _wait(lambda: len(receiver.bodies) == 2 and len(_commanded(tmp_path)) == 2)
        assert [alert["event"] for alert in receiver.bodies] == ["load_failed", "config_rejected"]
        assert "not among versions" in receiver.bodies[1]["reason"]


def test_a_webhook_that_fails_for_a_while_is_retried_and_a_4xx_is_not(start: StartDaemon, tmp_path: Path, receiver: Receiver) -> None:
    config = fake_config(tmp_path, {"v1": {}, "bad": {}}, extra=_alerts(tmp_path, receiver))
    with start(config) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["bad"].fail_load = "x"
        receiver.statuses = [500, 503]
        with pytest.raises(HotswapError):
            client.encode(["x"], "m@bad")
        _wait(lambda: len(receiver.bodies) == 1)
        assert receiver.requests == 3
        receiver.statuses = [404]
        with pytest.raises(HotswapError):
            client.encode(["x"], "m@bad")
        _wait(lambda: inproc.daemon.alerts.failed == 1)
        assert receiver.requests == 4 and len(receiver.bodies) == 1


def test_slow_or_broken_hooks_never_hold_up_serving_and_the_queue_is_bounded(start: StartDaemon, tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay = 1.2  # each POST takes longer than the encode below may
    extra = "[alerts]\n" + f'command = ["/nonexistent/alert-program"]\nwebhook = "{receiver.url}"\nretries = 0\nmax_pending = 2\n'
    config = fake_config(tmp_path, {"v1": {}, "bad": {}}, extra=extra)
    with start(config) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["bad"].fail_load = "x"
        for _ in range(6):
            with pytest.raises(HotswapError):
                client.encode(["x"], "m@bad")
        started = time.monotonic()
        assert client.encode(["serving goes on"], "m@v1").dim > 0
        assert time.monotonic() - started < 1.0
        alerts = inproc.daemon.alerts
        _wait(lambda: alerts.dropped >= 1)  # one delivering, two queued, the rest dropped
        assert alerts.dropped <= 4
        assert client.ping()["pong"]


def test_alert_settings_are_checked(tmp_path: Path) -> None:
    from hotswapd.config.schema import load_config

    for line, message in (('command = "notify-send boom"', "command"), ("command = []", "must name a program"), ('webhook = "file:///etc/passwd"', "http:// or https://")):
        (tmp_path / "c.toml").write_text(f"[alerts]\n{line}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "c.toml")


def test_a_webhook_that_never_answers_redirects_or_leaks_a_token_is_bounded_and_logged_safely(
    start: StartDaemon, tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a server trickling its answer held the alert thread for good; a 301 was
    followed as a body-less GET and counted as sent; the log showed the URL's token."""
    extra = f'[alerts]\nwebhook = "{receiver.url}?token=SECRET123"\ntimeout_seconds = 1\nretries = 0\n'
    with start(fake_config(tmp_path, {"v1": {}, "bad": {}}, extra=extra)) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["bad"].fail_load = "x"
        alerts = inproc.daemon.alerts
        receiver.delay = 4.0
        started = time.monotonic()
        with pytest.raises(HotswapError):
            client.encode(["x"], "m@bad")
        _wait(lambda: alerts.failed == 1, 3.0)
        assert time.monotonic() - started < 3.5
        receiver.delay = 0.0
        receiver.statuses = [301]
        with pytest.raises(HotswapError):
            client.encode(["x"], "m@bad")
        _wait(lambda: alerts.failed == 2)
        assert alerts.sent == 0
    assert "SECRET123" not in caplog.text and f"alert webhook http://127.0.0.1:{receiver.server.server_address[1]} failed" in caplog.text


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_command_that_hangs_is_killed_with_its_children(start: StartDaemon, tmp_path: Path) -> None:
    """Before: only the command was killed at its timeout; a child it started (or one that
    ignored SIGTERM) lived on under PID 1."""
    import subprocess

    marker = "1001.25"
    extra = f'[alerts]\ncommand = ["sh", "-c", "trap \\"\\" TERM; sleep {marker} & wait"]\ntimeout_seconds = 1\n'
    with start(fake_config(tmp_path, {"v1": {}, "bad": {}}, extra=extra)) as inproc, inproc.client() as client:
        fakebackend.CONTROLS["bad"].fail_load = "x"
        with pytest.raises(HotswapError):
            client.encode(["x"], "m@bad")
        _wait(lambda: inproc.daemon.alerts.failed == 1, 5.0)
    assert subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, check=False).stdout == b""
