"""Edge input at the CLI and the wire: NaN and infinity, too little or unterminated input,
options anywhere, one-line errors, oversized headers, what is not a socket (each test
failed before its fix; found by a hostile review of issue 13)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from hotswapd.client.connection import Client
from hotswapd.config.origin import origin_for
from hotswapd.errors import ProtocolError
from hotswapd.wire.protocol import decode_request
from hotswapd.host.systemd import user_unit_dir
from tests import fakebackend
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config, short_socket_dir

TERMINAL = {"TTY_COMPATIBLE": "1", "COLUMNS": "100"}


def hs(daemon: object, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> object:
    return run_hs(*args, endpoint=daemon.endpoint, stdin=stdin, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"], **(env or {})})  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_the_daemon_never_replaces_what_is_not_a_socket(start: StartDaemon, tmp_path: Path, kind: str) -> None:
    path = short_socket_dir() / "taken"
    if kind == "file":
        path.write_bytes(b"somebody's data")
    else:
        path.mkdir()
    with pytest.raises(RuntimeError, match="is not a socket; refusing to replace it"), start(fake_config(tmp_path, {"v1": {}}), endpoint=f"ipc://{path}"):
        pass
    assert path.read_bytes() == b"somebody's data" if kind == "file" else path.is_dir()


def test_nan_and_infinity_are_refused_everywhere(start: StartDaemon, tmp_path: Path) -> None:
    header = b'{"v":1,"id":"a","op":"switch","model":"m","options":{"version":"v2","share":NaN}}'
    with pytest.raises(ProtocolError, match="NaN is not a JSON number"):
        decode_request([header])
    for bad in (math.nan, math.inf, 0.0, -1.0):
        with pytest.raises(ValueError, match="finite number of seconds"):
            Client("ipc:///tmp/none.sock", timeout=bad)
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        for options in ({"share": 500}, {"steps": [-5, 200]}, {"steps": []}, {"step_seconds": 0}):
            with pytest.raises(ProtocolError):
                client.switch("m", "v2", "canary" if "share" in options else "gradual", **options)
        for args in (["switch", "m", "v2", "--canary", "nan"], ["switch", "m", "v2", "--steps", "-5,200"], ["switch", "m", "v2", "--steps", "10,nan"],
                     ["--timeout", "nan", "status"], ["status", "--timeout", "inf"], ["bench", "--duration", "nan"]):
            done = hs(daemon, *args)
            assert done.returncode == 2 and done.stderr.decode().startswith("hs: error: "), (args, done.stderr)  # type: ignore[attr-defined]
        assert client.status()["active"]["m"] == "v1" and not client.status()["rollouts"]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_a_corrupt_bench_history_is_skipped_not_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    history = state / "hotswapd" / "bench.jsonl"
    history.parent.mkdir(parents=True)
    good = {"at": time.time(), "model": "m", "version": "v1", "texts_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "batch_size": 32, "concurrency": 4}
    lines = [json.dumps({**good, "texts_per_s": 0}), json.dumps(good), json.dumps({**good, "at": 1e300}), '{"at": NaN}', "not json", json.dumps(good)]
    history.write_text("\n".join(lines) + "\n")
    done = run_hs("bench", "--history", "--json", env={"XDG_STATE_HOME": str(state)})
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2
    assert run_hs("bench", "--history", env={"XDG_STATE_HOME": str(state)}).returncode == 0
    history.unlink()
    history.mkdir()
    done = run_hs("bench", "--history", env={"XDG_STATE_HOME": str(state)})
    assert done.returncode == 1 and done.stderr.decode().startswith("hs: error: cannot read the bench history"), done.stderr


def test_compare_refuses_too_little_input(start: StartDaemon, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \nonly one\n")
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon:
        done = hs(daemon, "compare", "m", "v1", "v2", "--input", str(empty))
        assert done.returncode == 2 and b"at least 2 are needed" in done.stderr  # type: ignore[attr-defined]


def test_input_without_newlines_is_refused_at_once(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        started = time.monotonic()
        done = hs(daemon, "encode", "-f", "jsonl", stdin=b"\0" * (17 * 2**20))
        assert done.returncode == 1, done.stderr  # type: ignore[attr-defined]
        assert done.stderr.decode().strip() == "hs: error: line 1 is longer than 16 MiB; is this a text file?"  # type: ignore[attr-defined]
        assert time.monotonic() - started < 30


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_global_options_anywhere_and_value_less_ones_are_usage_errors(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        for args in (["daemon", "status", "--json", "--config"], ["encode", "x", "--socket"]):
            done = hs(daemon, *args)
            assert done.returncode == 2 and "requires an argument" in done.stderr.decode(), done.stderr  # type: ignore[attr-defined]
        env_without_socket = {"HOTSWAPD_SOCKET": ""}
        done = run_hs("daemon", "--socket", daemon.endpoint, "status", "--json", env=env_without_socket)
        assert done.returncode == 0 and json.loads(done.stdout)["running"] is True, done.stderr


def test_a_relative_config_is_reported_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert origin_for("c2.toml", tmp_path / "default.toml", missing_ok=True).name == str(tmp_path / "c2.toml")


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_evict_and_empty_stdin_start_and_load_nothing(start: StartDaemon, tmp_path: Path) -> None:
    done = run_hs("evict", "m", endpoint=f"ipc://{short_socket_dir()}/none.sock", env={"HOTSWAPD_NO_AUTOSTART": ""})
    assert done.returncode == 3 and b"starting hotswapd" not in done.stderr
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        client.evict("m")
        empty = json.loads(hs(daemon, "encode", stdin=b"").stdout)  # type: ignore[attr-defined]
        assert (empty["model"], empty["version"], empty["embeddings"]) == ("m", "v1", [])
        assert client.status()["loaded"] == []  # an empty input loads no model
        done = hs(daemon, "encode", "-m", "m@nope", stdin=b"")
        assert done.returncode == 1 and b"unknown version m@nope" in done.stderr  # type: ignore[attr-defined]


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_errors_stay_on_one_line_and_closed_stdout_is_said(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        done = hs(daemon, "encode", "x", "-m", "bad\nname")
        lines = done.stderr.decode().splitlines()  # type: ignore[attr-defined]
        assert done.returncode == 1 and len(lines) == 1 and "bad\\nname" in lines[0], lines  # type: ignore[attr-defined]
        closed = run_hs("models", endpoint=daemon.endpoint, stdout_closed=True)
        assert closed.returncode == 1 and closed.stderr.decode() == "hs: error: stdout is closed; nothing could be written\n"


def test_an_empty_history_says_so_on_a_terminal(start: StartDaemon, tmp_path: Path) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        out = hs(daemon, "history", env=TERMINAL).stdout.decode()  # type: ignore[attr-defined]
        assert out.strip() == "no switches yet (--all also lists loads, unloads and config reloads)"
        assert hs(daemon, "history").stdout.decode().splitlines() == ["when\tmodel\tevent\tfrom\tto\tstrategy\ttrigger\toutcome\treason"]  # type: ignore[attr-defined]


def test_a_relative_xdg_config_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert user_unit_dir() == Path.home() / ".config" / "systemd" / "user"


def test_long_names_are_whole_when_the_terminal_allows(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from hotswap_cli.models import MODELS_COLUMNS
    from hotswap_cli.output import render_table

    name, version = "n" * 64, "v" * 64
    row = [name, version, "*", "loaded", "1 MiB", "8", "128", "never", "1,000 exact", "fake", "/a/very/long/source/path/" * 6, "configured", ""]
    for width in (160, 200, 235, 300):
        console = Console(width=width, record=True, file=io.StringIO())
        render_table(console, "models", MODELS_COLUMNS, [row])
        text = console.export_text()
        assert name in text and version in text and "…" not in text, (width, text)
        assert max(len(line) for line in text.splitlines()) <= width


def test_an_oversized_request_header_is_answered_with_its_id(start: StartDaemon, tmp_path: Path) -> None:
    """The header is past the wire's limit, but its sender still gets a typed error at once,
    not a wait for its whole timeout (found through the HTTP endpoint)."""
    import zmq

    from hotswapd.wire.protocol import decode_reply, encode_request

    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        frames = encode_request("big-1", "encode", model="m" * 100_000, options={}, payload=[b"x"])
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        try:
            sock.connect(daemon.endpoint)
            sock.send_multipart(frames)
            assert sock.poll(5000), "no answer to an oversized header"
            request_id, body, _, ok = decode_reply([memoryview(f) for f in sock.recv_multipart()])
            assert (request_id, ok, body["code"]) == ("big-1", False, "protocol_error")
        finally:
            sock.close(linger=0)
            context.term()


def test_an_empty_text_is_refused_on_every_door(start: StartDaemon, tmp_path: Path) -> None:
    """Before: an empty stdin line was encoded as "" while file jobs and HTTP refused it."""
    from hotswapd.errors import InvalidText

    lines = tmp_path / "lines.txt"
    lines.write_text("first\n\nthird\n")
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        with pytest.raises(InvalidText, match="text 1 is empty"):  # the request's own index, from 0
            client.encode(["a", ""])
        piped = hs(daemon, "encode", "-f", "jsonl", stdin=lines.read_bytes())  # type: ignore[attr-defined]
        assert piped.returncode == 1 and piped.stderr.decode().startswith("hs: error: line 2 is empty"), piped.stderr
        job = hs(daemon, "encode", "--input", str(lines), "--output", str(tmp_path / "out.npy"))  # type: ignore[attr-defined]
        assert job.returncode != 0 and b"line 2" in job.stderr and b"empty" in job.stderr, job.stderr
        assert client.encode(["still serving"]).count == 1


def test_the_timeout_may_come_from_the_environment(start: StartDaemon, tmp_path: Path) -> None:
    """HOTSWAPD_TIMEOUT: each request's deadline for a whole script, as --timeout is for one command."""
    with start(fake_config(tmp_path, {"v1": {}})) as daemon:
        fakebackend.CONTROLS["v1"].delay = 0.5
        slow = hs(daemon, "encode", "x", env={"HOTSWAPD_TIMEOUT": "0.1"})  # type: ignore[attr-defined]
        assert slow.returncode != 0 and b"0.1 s" in slow.stderr, slow.stderr
        assert hs(daemon, "encode", "x", env={"HOTSWAPD_TIMEOUT": "30"}).returncode == 0  # type: ignore[attr-defined]
