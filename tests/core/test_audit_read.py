"""The audit log is read backwards, block by block: the last entries, in order, whatever the lines."""

from __future__ import annotations

import json
from pathlib import Path

from hotswapd.core import audit
from hotswapd.core.audit import AuditLog


def test_reads_the_last_entries_in_order_across_blocks_and_bad_lines(tmp_path: Path, monkeypatch: object) -> None:
    path = tmp_path / "audit.jsonl"
    lines = [json.dumps({"event": "switch", "model": "m" if i % 2 else "other", "n": i}) for i in range(200)]
    lines.insert(150, '{"torn": ')  # a write cut short by a crash
    lines.insert(120, "[1, 2]")  # valid JSON, not an entry
    path.write_text("\n".join(lines) + "\n")
    log = AuditLog(path)
    for block in (7, 64, audit.READ_BLOCK):
        entries = list(audit._lines_backwards(path, block))
        assert len(entries) == len(lines)
        assert entries[0] == lines[-1].encode()
    got = log.read("m", limit=5, events={"switch"})
    assert [entry["n"] for entry in got] == [191, 193, 195, 197, 199]
    assert log.read(limit=10_000) and log.last_skipped == 2  # the torn line and the list, counted
    assert len(log.read(limit=10_000)) == 200
    assert AuditLog(tmp_path / "missing.jsonl").read() == []


def test_garbage_lines_of_any_size_are_skipped_quickly(tmp_path: Path) -> None:
    import time

    path = tmp_path / "audit.jsonl"
    good = json.dumps({"event": "switch", "model": "m", "n": 1})
    path.write_bytes(good.encode() + b"\n" + b"z" * (16 * 2**20) + b"\n" + b"9" * 5000 + b"\n" + b'{"event": "switch", "model": "m", "n": 2}\n')
    started = time.monotonic()
    entries = AuditLog(path).read("m", limit=10)
    assert [entry["n"] for entry in entries] == [1, 2]
    assert time.monotonic() - started < 2.0
