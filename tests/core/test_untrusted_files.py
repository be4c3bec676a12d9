"""Issue 12: every file the daemon reads is untrusted, and a disk it cannot write does not stop it."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from hotswapd.core.audit import AuditLog
from hotswapd.errors import ModelLoadError
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.core.test_leases import send
from tests.fakebackend import CONTROLS
from tests.inproc import fake_config


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe not utf-8", b"[" * 5000, b'{"models": {"m": {"active": 7, "rollout": "yes"}}}', b'{"models": ' + b"1" * 5000 + b"}", b"[]"],
    ids=["not-utf8", "deep", "wrong-types", "huge-number", "not-an-object"],
)
def test_a_corrupt_state_file_is_set_aside_and_the_daemon_serves(start: StartDaemon, tmp_path: Path, garbage: bytes) -> None:
    state = tmp_path / "state" / "hotswapd" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_bytes(garbage)
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        assert client.encode(["still serving"]).version == "v1"
        assert client.switch("m", "v1")["outcome"] == "unchanged"
        rejected = [e for e in client.history(all_events=True) if e["event"] == "state_rejected"]
        assert len(rejected) == 1 and "starting from the config's defaults" in rejected[0]["reason"]
    aside = list(state.parent.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    json.loads(state.read_text())  # a fresh, valid file


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
@pytest.mark.parametrize("edit", ["x = " + "9" * 5000, "x = " + "[" * 3000 + "]" * 3000], ids=["huge-int", "deep"])
def test_a_hostile_config_edit_is_rejected_and_the_daemon_keeps_serving(start: StartDaemon, tmp_path: Path, edit: str) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        daemon.config_path.write_text(edit + "\n")
        with pytest.raises(Exception, match="not valid TOML|invalid config"):
            client.reload_config()
        assert client.encode(["still serving"]).version == "v1"
        assert "not valid TOML" in (client.status()["config_error"] or "") or "invalid config" in (client.status()["config_error"] or "")
    done = run_hs("config", "validate", str(daemon.config_path))
    assert done.returncode == 2 and len(done.stderr.decode().strip().splitlines()) == 1, done.stderr


def test_replies_larger_than_a_request_header_reach_the_client(start: StartDaemon, tmp_path: Path) -> None:
    audit = tmp_path / "state" / "hotswapd" / "audit.jsonl"
    audit.parent.mkdir(parents=True)
    entry = {"event": "switch", "model": "m", "from": "v1", "to": "v1", "strategy": "immediate", "trigger": "cli", "outcome": "done"}
    audit.write_text("".join(json.dumps({**entry, "ts": i}) + "\n" for i in range(3000)))
    with start(fake_config(tmp_path, {"v1": {}})) as daemon, daemon.client() as client:
        page = client.history("m", limit=2000)
        assert len(page) == 2000 and page[-1]["ts"] == 2999
        older = client.history("m", limit=2000, skip=2000)
        assert [e["ts"] for e in older] == list(range(1000))


def test_the_audit_log_rotates_by_size_and_history_reads_across_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=2000, keep=3)
    for i in range(200):
        log.record("switch", model="m", n=i)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all(p.stat().st_size < 2200 for p in tmp_path.iterdir())
    got = [e["n"] for e in log.read("m", limit=30)]
    assert got == list(range(170, 200))
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_an_unwritable_state_dir_serves_and_says_switches_are_not_persisted(start: StartDaemon, tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "hotswapd").write_text("a file where the state dir should be")
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client() as client:
        result = client.switch("m", "v2")
        assert result["outcome"] == "done" and result["persisted"] is False
        assert "cannot write state file" in result["not_persisted"]
        assert client.encode(["served"]).version == "v2"  # applied all the same


def test_private_files_are_created_and_tightened_owner_only(start: StartDaemon, tmp_path: Path) -> None:
    state = tmp_path / "state" / "hotswapd"
    state.mkdir(parents=True, mode=0o755)
    os.chmod(state, 0o755)
    (state / "audit.jsonl").write_text("")
    os.chmod(state / "audit.jsonl", 0o644)
    config = fake_config(tmp_path, {"v1": {}}, extra="[cache]\npersist = true\n")
    with start(config) as daemon, daemon.client() as client:
        client.encode(["cached on disk"])
    cache = tmp_path / "cache" / "hotswapd"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "audit.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache / "embeddings.sqlite").stat().st_mode) == 0o600


def test_autostart_makes_the_state_dir_owner_only_so_the_daemon_has_nothing_to_tighten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`hs` created the state dir 0755 for the daemon's log; the daemon's first start then
    warned that it had tightened it (issue 29)."""
    from hotswapd.client.launcher import prepared_log_path
    from hotswapd.host.paths import ensure_private_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "fresh-state"))
    log_path = prepared_log_path()
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700
    with caplog.at_level("WARNING", logger="hotswapd"):
        assert ensure_private_dir(log_path.parent) is None  # what the daemon does at its start
    assert "tightened" not in caplog.text


def test_a_bad_sqlite_cache_is_checked_row_by_row_and_a_garbage_file_rebuilt(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {}}, extra="[cache]\npersist = true\n")
    with start(config) as daemon, daemon.client() as client:
        client.encode(["remembered"])
    db_path = tmp_path / "cache" / "hotswapd" / "embeddings.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("UPDATE vectors SET vector = ?", (b"\x00\x00\x80\x3f",))  # one float: a vector of dimension 1
    db.commit()
    db.close()
    with start(config) as daemon, daemon.client() as client:
        result = client.encode(["remembered"])
        assert result.dim == 8 and result.cached == 0
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.write_bytes(b"this is not a database" * 100)
    with start(config) as daemon, daemon.client() as client:
        assert client.encode(["after garbage"]).dim == 8
    assert list(db_path.parent.glob("embeddings.sqlite.corrupt-*"))


def test_a_source_that_is_a_device_or_fifo_fails_at_once(start: StartDaemon, tmp_path: Path) -> None:
    fifo = tmp_path / "weights.fifo"
    os.mkfifo(fifo)
    config = fake_config(tmp_path, {"v1": {}}) + f'[models.m.versions.zero]\nbackend = "fake"\nsource = "/dev/zero"\n[models.m.versions.fifo]\nbackend = "fake"\nsource = "{fifo}"\n'
    with start(config) as daemon, daemon.client(timeout=10) as client:
        for version in ("zero", "fifo"):
            with pytest.raises(ModelLoadError, match="not a regular file or a directory"):
                client.encode(["x"], f"m@{version}")
        assert client.encode(["x"]).version == "v1"


def test_a_load_that_hangs_times_out_and_does_not_hold_up_the_stop(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {}, "v2": {}}, extra="[daemon]\nload_timeout_seconds = 0.5\n")
    with start(config) as daemon, daemon.client(timeout=10) as client:
        CONTROLS["v2"].load_gate = threading.Event()  # a hung mount: never set here
        started = time.monotonic()
        with pytest.raises(ModelLoadError, match="took longer than 0.5 s"):
            client.encode(["x"], "m@v2")
        assert time.monotonic() - started < 3
        waiting = send(client, "waits on a hung load", model="m@v2")
        time.sleep(0.2)
        stop_started = time.monotonic()
        daemon.daemon.request_stop()
        with pytest.raises(ModelLoadError):
            client.receive(waiting)
    assert time.monotonic() - stop_started < 5
