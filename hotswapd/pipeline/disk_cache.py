"""The optional persistent tier of the embedding cache: sqlite under the cache dir.

Off by default (``[cache] persist = true``). Same keys as the memory tier (they already
include the version's fingerprint and options), so vectors survive a restart and are never
served for another version. Bounded by ``persist_max_mb``: the oldest-written rows go first.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from hotswapd.host.safefiles import tighten

log = logging.getLogger(__name__)
TRIM_EVERY = 1000  # writes between size checks


class DiskCache:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._writes = 0
        try:
            self._db = _open(path)
        except sqlite3.OperationalError:
            raise  # locked or busy (another process): not garbage; the caller goes without
        except sqlite3.DatabaseError as exc:
            # Not a database (garbage, a truncated file): set it aside and start empty.
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            log.error("persistent cache %s cannot be opened (%s); moved to %s, starting empty", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{path}{suffix}")
                if part.exists():
                    part.replace(f"{aside}{suffix}")
            self._db = _open(path)

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        with self._lock:
            rows = self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", keys).fetchall()  # noqa: S608 -- placeholders only
        return {bytes(key): bytes(vector) for key, vector in rows}

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)", items)
            self._writes += len(items)
            if self._writes >= TRIM_EVERY:
                self._writes = 0
                self._trim()

    def _trim(self) -> None:
        (count, size) = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(vector) + LENGTH(key)), 0) FROM vectors").fetchone()
        if size <= self._max_bytes or not count:
            return
        drop = int(count * (1 - self._max_bytes / size)) + 1
        self._db.execute("DELETE FROM vectors WHERE rowid IN (SELECT rowid FROM vectors ORDER BY rowid LIMIT ?)", (drop,))
        log.info("persistent cache trimmed by %d vectors", drop)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _open(path: Path) -> sqlite3.Connection:
    """Open (owner-only) and check the schema: a file that is not a database fails here."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    else:
        tighten(path, 0o600)  # never through a symlink
    # A cache waits little for a lock another process holds: it serves without it instead.
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=1.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        db.execute("SELECT key, vector FROM vectors LIMIT 1").fetchall()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db
