"""Issue 13: `hs` gives no wrong answer without a word."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def hs(daemon: object, *args: str, stdin: bytes | None = None) -> object:
    return run_hs(*args, endpoint=daemon.endpoint, stdin=stdin, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})  # type: ignore[attr-defined]


def test_stdin_errors_name_the_input_line(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {}}, extra="[daemon]\nmax_text_bytes = 1000\n")
    with start(config) as daemon:
        lines = [b"fine"] * 1000
        lines[599] = b"x" * 5000
        done = hs(daemon, "encode", "-f", "jsonl", stdin=b"\n".join(lines) + b"\n")
        assert done.returncode == 1
        assert done.stderr.decode().strip() == "hs: error: line 600 is 5000 bytes; the limit is 1000 (daemon.max_text_bytes)"
        lines = [b"fine"] * 400
        lines[299] = b"\xff\xfe"
        done = hs(daemon, "encode", "-f", "jsonl", stdin=b"\n".join(lines) + b"\n")
        assert done.stderr.decode().strip().startswith("hs: error: line 300 is not valid UTF-8")


def test_rollout_options_never_silently_ignored(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        implied = hs(daemon, "switch", "m", "v2", "--steps", "10,25,100", "--step-seconds", "3600")
        assert implied.returncode == 0 and "gradual rollout of v2 started" in implied.stdout.decode(), implied.stderr
        assert client.status()["rollouts"]["m"]["share"] == 10.0
        assert client.status()["active"]["m"] == "v1"
        hs(daemon, "switch", "m", "--abort")
        for args, conflict in (
            (["--canary", "5", "--steps", "10,100"], "apply to --gradual only"),
            (["--sticky-key"], "--sticky-key applies to a rollout"),
        ):
            refused = hs(daemon, "switch", "m", "v2", *args)
            assert refused.returncode == 2 and conflict in refused.stderr.decode(), refused.stderr
        assert client.status()["active"]["m"] == "v1" and not client.status()["rollouts"]


def test_history_says_who_switched_cli_or_api(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        client.switch("m", "v2")
        assert hs(daemon, "switch", "m", "v1").returncode == 0
        client.rollback("m")
        triggers = [(entry["event"], entry["trigger"]) for entry in client.history("m")]
        assert triggers == [("switch", "api"), ("switch", "cli"), ("rollback", "api")]


def test_status_names_a_config_file_that_appeared_after_the_start(start: StartDaemon, tmp_path: Path) -> None:
    config_text = fake_config(tmp_path, {"v1": {}})
    with start(config_text) as daemon, daemon.client() as client:
        # As a start without a file: the daemon reports the built-in default ...
        daemon.daemon.state.config_path = None
        assert client.status()["config_path"] is None
        # ... until a config file is applied.
        client.reload_config()
        assert client.status()["config_path"] == str(daemon.config_path)
