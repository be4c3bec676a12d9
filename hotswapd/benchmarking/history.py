"""``bench.jsonl``: one line per version measured, by ``hs bench`` or by a periodic round.

Read by the daemon (a version's past rounds, to notice a regression) and by ``hs bench
--history``: the file is data from outside, so a line that is not a whole, well-typed record
(a run killed mid-write, a hand edit) is skipped, never a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
from pathlib import Path
from statistics import median
from typing import Any

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # as hotswapd.config.schema.NAME_PATTERN
MAX_BYTES = 16 * 2**20  # past this, the file is moved to bench.jsonl.1 (one generation kept)
KEYS: dict[str, Any] = {"at": (int, float), "model": str, "version": str, "texts_per_s": (int, float), "p50_ms": (int, float), "p99_ms": (int, float), "batch_size": int, "concurrency": int}


def history_path() -> Path:
    from hotswapd.host.paths import state_dir

    return state_dir() / "bench.jsonl"


def read_history(path: Path, tail_bytes: int = 2 * MAX_BYTES) -> list[dict[str, Any]]:
    """The well-formed rows of the file's last ``tail_bytes`` (a file grown past that by hand
    is read from its end: rounds keep running, and append rotates it)."""
    from hotswapd.errors import HotswapError

    try:
        data = _tail(path, tail_bytes)
    except FileNotFoundError:
        return []
    except OSError as exc:  # a directory, a FIFO, no permission
        raise HotswapError(f"cannot read the bench history {path}: {exc.strerror or exc}") from None
    entries = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line, parse_constant=lambda name: None)  # NaN/Infinity: not a record
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and all(isinstance(entry.get(key), kind) and _sane(key, entry[key]) for key, kind in KEYS.items()) and _names(entry):
            entries.append(_optional_fields_checked(entry))
    return entries


def _tail(path: Path, limit: int) -> bytes:
    from hotswapd.host.safefiles import read_tail

    data, cut = read_tail(path, limit)
    return data.partition(b"\n")[2] if cut else data  # from the first whole line


def _optional_fields_checked(entry: dict[str, Any]) -> dict[str, Any]:
    """A periodic row's own fields, kept only when well-typed (a hand edit must not break
    the table): flags are booleans, the round an id, the agreement a cosine."""
    for key in ("periodic", "active", "recommended"):
        if key in entry and not isinstance(entry[key], bool):
            entry[key] = None
    if "round" in entry and not (isinstance(entry["round"], str) and len(entry["round"]) <= 64):
        entry["round"] = None
    for key in ("agreement", "agreement_gate", "regression"):
        value = entry.get(key)
        if key in entry and not (isinstance(value, float) and -1.001 <= value <= 1.001):
            entry[key] = None
    for key in ("fingerprint", "backend"):
        if key in entry and not (isinstance(entry[key], str) and len(entry[key]) <= 200):
            entry[key] = None
    return entry


def _names(entry: dict[str, Any]) -> bool:
    """Model and version names as a config allows them: no escape sequences or line breaks
    reach a terminal from a hand-edited file."""
    return all(NAME.match(entry[key]) for key in ("model", "version"))


def _sane(key: str, value: Any) -> bool:
    """Numbers a real run could have written: a timestamp between 1970 and 5138, positive speeds."""
    if isinstance(value, bool):
        return False
    if key == "at":
        return 0 <= value < 1e11
    if key == "texts_per_s":
        return 0 < value < 1e12
    if isinstance(value, (int, float)):
        return 0 <= value < 1e12
    return True


def append(path: Path, rows: list[dict[str, Any]]) -> None:
    """Add rows in one write (O_APPEND: a concurrent `hs bench` cannot interleave inside a
    line); after a line cut short (a full disk), start on a line of its own."""
    data = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two writers past the size at once must not both rotate
        _rotate_and_append(path, data)
    finally:
        os.close(lock)


def _rotate_and_append(path: Path, data: bytes) -> None:
    try:
        if path.stat().st_size + len(data) > MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def recommend(rows: list[dict[str, Any]], gate: float) -> dict[str, str]:
    """Per model, the fastest version of a round that agrees with the active one at ``gate``
    (the active version itself always qualifies)."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        agreement = row.get("agreement")
        if not (row.get("active") or (isinstance(agreement, (int, float)) and agreement >= gate)):
            continue
        best = chosen.get(row["model"])
        if best is None or row["texts_per_s"] > best["texts_per_s"]:
            chosen[row["model"]] = row
    return {model: row["version"] for model, row in chosen.items()}


def baseline(entries: list[dict[str, Any]], row: dict[str, Any], rounds: int = 5) -> float | None:
    """The median speed of the row's version in its last periodic rounds measured alike
    (the same fingerprint and batch size)."""
    same = ("model", "version", "fingerprint", "batch_size")
    past = [e["texts_per_s"] for e in entries if e.get("periodic") is True and all(e.get(key) == row[key] for key in same)]
    return median(past[-rounds:]) if past else None


def latest_rounds(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per model, the rows of its latest periodic round."""
    latest: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry.get("periodic") is not True or not isinstance(entry.get("round"), str):
            continue
        rows = latest.get(entry["model"])
        if rows and rows[0]["round"] != entry["round"]:
            rows = None
        latest[entry["model"]] = [*(rows or []), entry]
    return latest
