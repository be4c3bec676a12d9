"""``bench.jsonl``: one line per version measured, by ``hs bench`` or by a periodic round.

Read by the daemon (a version's past rounds, to notice a regression) and by ``hs bench
--history``: the file is data from outside, so a line that is not a whole, well-typed record
(a run killed mid-write, a hand edit) is skipped, never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from statistics import median
from typing import Any

MAX_BYTES = 16 * 2**20  # past this, the file is moved to bench.jsonl.1 (one generation kept)
KEYS: dict[str, Any] = {"at": (int, float), "model": str, "version": str, "texts_per_s": (int, float), "p50_ms": (int, float), "p99_ms": (int, float), "batch_size": int, "concurrency": int}


def history_path() -> Path:
    from hotswapd.paths import state_dir

    return state_dir() / "bench.jsonl"


def read_history(path: Path) -> list[dict[str, Any]]:
    from hotswapd.errors import HotswapError
    from hotswapd.safefiles import read_regular

    try:
        lines = read_regular(path, 2 * MAX_BYTES).decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except ValueError as exc:  # a FIFO, a device or a huge file: not a history hs wrote
        raise HotswapError(f"cannot read the bench history {path}: {exc}") from None
    except OSError as exc:  # a directory, no permission
        raise HotswapError(f"cannot read the bench history {path}: {exc.strerror or exc}") from None
    entries = []
    for line in lines:
        try:
            entry = json.loads(line, parse_constant=lambda name: None)  # NaN/Infinity: not a record
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict) and all(isinstance(entry.get(key), kind) and _sane(key, entry[key]) for key, kind in KEYS.items()):
            entries.append(entry)
    return entries


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
    """Add rows in one write (O_APPEND: a concurrent `hs bench` cannot interleave inside a line)."""
    data = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size + len(data) > MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
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


def baseline(entries: list[dict[str, Any]], model: str, version: str, fingerprint: str | None, rounds: int = 5) -> float | None:
    """The median speed of a version's last periodic rounds with the same fingerprint."""
    past = [e["texts_per_s"] for e in entries if e.get("periodic") is True and e["model"] == model and e["version"] == version and e.get("fingerprint") == fingerprint]
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
