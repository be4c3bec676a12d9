"""Files and loads that are not what they should be: symlinks, FIFOs and oversized files
where state, config, keys and caches live, hung or late loads, locked caches (each test
failed before its fix; found by a hostile review of issue 12)."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from hotswapd.config.schema import load_config
from hotswapd.core import bounded
from hotswapd.core.audit import AuditLog
from hotswapd.core.statefile import StateFile
from hotswapd.errors import ConfigError, ModelLoadError
from hotswapd.host.paths import ensure_private_dir
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def test_tightening_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    logs = tmp_path / "state"
    logs.mkdir()
    (logs / "audit.jsonl").symlink_to(outside)
    AuditLog(logs / "audit.jsonl")
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    (tmp_path / "linked").symlink_to(target)
    assert ensure_private_dir(tmp_path / "linked") is None
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_missing_ancestors_of_a_private_dir_are_made_owner_only(tmp_path: Path) -> None:
    deep = tmp_path / "run" / "user" / "hotswapd"
    assert ensure_private_dir(deep) is None
    for directory in (tmp_path / "run", tmp_path / "run" / "user", deep):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.parametrize("kind", ["fifo", "dir", "huge"])
def test_a_state_file_that_is_not_a_small_regular_file_is_set_aside_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "state.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        with open(path, "wb") as handle:
            handle.truncate(2 * 2**30)  # sparse: 2 GiB that must not be read
    started = time.monotonic()
    state = StateFile(path)
    assert state.load() == {}
    assert time.monotonic() - started < 2
    assert state.set_aside and not path.exists()


def test_fifos_where_config_audit_or_keys_should_be_never_block(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    os.mkfifo(config)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(config)
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    os.mkfifo(audit_dir / "audit.jsonl")
    log = AuditLog(audit_dir / "audit.jsonl")
    done = threading.Event()
    threading.Thread(target=lambda: (log.record("switch", model="m"), log.read(), done.set()), daemon=True).start()
    assert done.wait(3), "the audit log blocked on a FIFO"


def test_a_fifo_among_authorised_keys_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hotswapd.host import curve_keys

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    curve_keys.init_keys()
    os.mkfifo(curve_keys.authorized_dir() / "trap.key")
    done = threading.Event()
    found: dict[str, bytes] = {}
    threading.Thread(target=lambda: (found.update(curve_keys.authorized()), done.set()), daemon=True).start()
    assert done.wait(3) and list(found) == ["local"]


def test_a_hung_load_is_not_started_again_while_it_runs() -> None:
    release = threading.Event()
    calls = []

    def hung() -> str:
        calls.append(1)
        release.wait(10)
        return "late"

    stopping = threading.Event()
    with pytest.raises(ModelLoadError, match="took longer than 0.2 s"):
        bounded.run_bounded(hung, "m@hung", time.perf_counter(), 0.2, stopping)
    with pytest.raises(ModelLoadError, match="still running"):
        bounded.run_bounded(hung, "m@hung", time.perf_counter(), 0.2, stopping)
    assert len(calls) == 1
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # once it ends, a new load may start
        try:
            bounded.HUNG.check("m@hung", 0.2)
            break
        except ModelLoadError:
            time.sleep(0.05)
    assert bounded.run_bounded(lambda: "fine", "m@hung", time.perf_counter(), 5, stopping) == "fine"


def test_a_load_finishing_as_its_time_runs_out_is_taken_not_leaked() -> None:
    closed = []

    class Embedder:
        def close(self) -> None:
            closed.append(1)

    for _ in range(12):
        value = None
        try:
            value = bounded.run_bounded(lambda: (time.sleep(0.1), Embedder())[1], "m@edge", time.perf_counter(), 0.1, threading.Event())
        except ModelLoadError:
            time.sleep(0.2)
        if value is None:
            assert closed, "a load that finished after its timeout was neither returned nor closed"
            closed.clear()


def test_a_locked_sqlite_cache_is_not_taken_for_garbage(start: StartDaemon, tmp_path: Path) -> None:
    config = fake_config(tmp_path, {"v1": {}}, extra="[cache]\npersist = true\n")
    with start(config) as daemon, daemon.client() as client:
        client.encode(["x"])
    db_path = tmp_path / "cache" / "hotswapd" / "embeddings.sqlite"
    holder = sqlite3.connect(db_path, timeout=0)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with start(config) as daemon, daemon.client() as client:
            assert client.encode(["served without the disk tier"]).dim == 8
    finally:
        holder.rollback()
        holder.close()
    assert not list(db_path.parent.glob("embeddings.sqlite.corrupt-*"))


def test_restored_rollouts_are_range_checked(tmp_path: Path) -> None:
    import json

    path = tmp_path / "state.json"
    for rollout in (
        {"source": "v1", "target": "v2", "strategy": "canary", "share": float("inf")},
        {"source": "v1", "target": "v2", "strategy": "canary", "share": -50},
        {"source": "v1", "target": "v2", "strategy": "bogus", "share": 10},
        {"source": "v1", "target": "v2", "strategy": "gradual", "share": 10, "steps": []},
        {"source": "v1", "target": "v2", "strategy": "gradual", "share": 10, "steps": [50, 100], "step_seconds": -1},
    ):
        path.write_text(json.dumps({"models": {"m": {"active": "v1", "rollout": rollout}}}))
        state = StateFile(path)
        assert state.load() == {} and state.set_aside, rollout


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_config_validate_with_an_absurd_source_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[models.m]\nactive = "v1"\n[models.m.versions.v1]\nsource = "{"x" * 100_000}"\n')
    done = run_hs("config", "validate", str(config))
    assert done.returncode == 2 and len(done.stderr.decode().strip().splitlines()) == 1, done.stderr[-500:]


def test_an_unusable_onnx_export_check_is_not_trusted(tmp_path: Path) -> None:
    from hotswapd.backends.support.export_cache import read_check as _read_check

    for garbage in (b"[" * 5000, b'{"mean_cosine": ' + b"9" * 5000 + b"}", b"\xff", b'{"mean_cosine": "high"}', b"[]"):
        (tmp_path / "check.json").write_bytes(garbage)
        assert _read_check(tmp_path) is None
    (tmp_path / "check.json").write_text('{"mean_cosine": 0.999, "min_cosine": 0.99, "sample_size": 21}')
    assert _read_check(tmp_path) == {"mean_cosine": 0.999, "min_cosine": 0.99, "sample_size": 21}
