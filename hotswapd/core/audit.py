"""The audit trail: one JSON line per load, unload, switch, rollback and rejected config.

Appended under the state dir; ``hs history`` reads it back through the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO

from hotswapd.host.paths import ensure_private_dir
from hotswapd.host.safefiles import tighten

log = logging.getLogger(__name__)

READ_BLOCK = 64 * 1024
ROTATE_BYTES = 16 * 2**20  # the log is rotated past this size ...
KEEP_FILES = 4  # ... keeping this many older files (audit.jsonl.1 .. .4)
MAX_LINE_BYTES = 1024 * 1024  # an audit entry is a few hundred bytes; longer lines are garbage
SWITCH_EVENTS = {"switch", "rollback", "abort", "auto_rollback", "rollout_step", "rollout_complete"}


class AuditLog:
    def __init__(self, path: Path, listener: Callable[..., None] | None = None, max_bytes: int = ROTATE_BYTES, keep: int = KEEP_FILES) -> None:
        self.path = path
        self._listener = listener
        self._lock = threading.Lock()
        self._max_bytes = max_bytes
        self._keep = keep
        self.last_skipped = 0  # lines the last read passed over as not entries (torn, garbage)
        problem = ensure_private_dir(path.parent)
        if problem:  # a read-only state dir: serve anyway, without an audit trail
            log.error("audit log unavailable (%s); switches are not recorded", problem)
        for existing in self.files_newest_first():
            try:
                if tighten(existing, 0o600):  # a regular file of ours, never through a link
                    log.warning("tightened %s to 600: it names every model, version and switch", existing)
            except OSError:
                pass  # not ours to change (read-only): reading it still works

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": round(time.time(), 3), "event": event, **{k: v for k, v in fields.items() if v is not None}}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            try:
                self._rotate_if_full()
                # O_NONBLOCK: a FIFO put where the log should be must not block the writer.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise OSError(f"{self.path} is not a regular file")
                    os.write(fd, line)
                finally:
                    os.close(fd)
            except OSError as exc:  # an unwritable audit log must not stop serving
                log.error("cannot append to audit log %s: %s", self.path, exc)
        if self._listener is not None:
            self._listener(event, **fields)
        return entry

    def _rotate_if_full(self) -> None:
        """audit.jsonl -> .1 -> .2 ... keeping ``keep`` old files (lock held)."""
        try:
            if self.path.stat().st_size < self._max_bytes:
                return
        except FileNotFoundError:
            return
        for n in range(self._keep, 0, -1):
            older = self._numbered(n)
            if n == self._keep:
                older.unlink(missing_ok=True)
            elif older.exists():
                os.replace(older, self._numbered(n + 1))
        os.replace(self.path, self._numbered(1))

    def _numbered(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def files_newest_first(self) -> list[Path]:
        return [self.path, *(self._numbered(n) for n in range(1, self._keep + 1))]

    def read(self, model: str | None = None, limit: int = 50, events: set[str] | None = None, skip: int = 0) -> list[dict[str, Any]]:
        """The last ``limit`` entries, oldest first, optionally for one model and some events,
        leaving out the ``skip`` newest (pages of history, newest page first).

        Read from the end of the file backwards, block by block, so the cost is that of the
        entries asked for, not of the whole log. Lines that are not entries (torn by a
        crash, garbage, absurdly long) are skipped."""
        kept: list[dict[str, Any]] = []
        skipped = 0
        try:
            for line in self._all_lines_backwards():
                entry = _entry(line)
                if entry is None:
                    skipped += 1
                    continue
                if model is not None and entry.get("model") != model:
                    continue
                if events is not None and entry.get("event") not in events:
                    continue
                if skip > 0:
                    skip -= 1
                    continue
                kept.append(entry)
                if len(kept) >= limit:
                    break
        except OSError as exc:
            log.error("cannot read audit log %s: %s", self.path, exc)
            return []
        kept.reverse()
        self.last_skipped = skipped
        return kept

    def _all_lines_backwards(self) -> Iterator[bytes]:
        # Opened together under the writer's lock, so a rotation during the read cannot
        # show an entry twice or out of order: the open files are the ones read.
        handles = []
        with self._lock:
            for path in self.files_newest_first():
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    log.error("skipping %s in the audit trail: not a regular file", path)
                    continue
                handles.append(os.fdopen(fd, "rb"))
        try:
            for handle in handles:
                yield from _lines_backwards(handle)
        finally:
            for handle in handles:
                handle.close()


def _entry(line: bytes) -> dict[str, Any] | None:
    if len(line) > MAX_LINE_BYTES:
        return None  # no entry of ours is that long
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, a 5,000-digit number
        return None
    return entry if isinstance(entry, dict) else None


def _lines_backwards(source: Path | BinaryIO, block: int = READ_BLOCK) -> Iterator[bytes]:
    """The file's lines, last first, reading ``block`` bytes at a time."""
    with (open(source, "rb") if isinstance(source, Path) else nullcontext(source)) as handle:
        position = handle.seek(0, os.SEEK_END)
        partial: list[bytes] = []  # the line being read, its later pieces first
        partial_size = 0
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            parts = handle.read(step).split(b"\n")
            if len(parts) == 1:  # no line break in this block: all of it continues the line
                if partial_size <= MAX_LINE_BYTES:
                    partial.append(parts[0])
                partial_size += len(parts[0])
            else:
                line = _joined([*partial, parts[-1]], partial_size + len(parts[-1]))
                if line:
                    yield line
                for middle in reversed(parts[1:-1]):
                    if middle:
                        yield middle
                partial, partial_size = [parts[0]], len(parts[0])
            time.sleep(0)  # let the socket thread have the GIL between blocks
        line = _joined(partial, partial_size)
        if line:
            yield line


def _joined(pieces_later_first: list[bytes], size: int) -> bytes:
    """A line from its pieces; one too long to be an entry becomes a stand-in that is none
    (never assembled: a 64 MiB garbage line costs a scan, not a copy per block)."""
    if size > MAX_LINE_BYTES:
        return b"-"
    return b"".join(reversed(pieces_later_first))
