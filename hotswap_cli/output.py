"""Printing for people (rich, imported only when a table is drawn) and for scripts.

A listing goes out three ways: a rich table on a terminal, sized to it; tab-separated
lines with a header when stdout is a pipe or a file (what ``cut`` and ``awk`` read); JSON
with ``--json``. At any width the identifying columns (name, version, time) are printed
whole: columns marked ``drop`` go first, from the right, and long free text (``note``
columns: reasons, errors) is printed under the table with a marker in its cell.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

NOTE_INLINE = 24  # a note column's text longer than this goes under the table
WRAP_MIN = 24  # the narrowest a wrapping column (a path) is folded to before columns are dropped


@dataclass(frozen=True)
class Column:
    header: str
    drop: int = 0  # 0: always shown; otherwise dropped on a narrow terminal, highest first
    note: bool = False  # long values go under the table, marked [n] in the cell
    wrap: bool = False  # may wrap inside its cell (a path) rather than be dropped


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def stdout_is_terminal() -> bool:
    """A terminal, or what claims to be one: TTY_COMPATIBLE=1/0 overrides, as rich reads it
    (a pager with colours, a recorded session, the tests)."""
    claimed = os.environ.get("TTY_COMPATIBLE", "")
    if claimed in ("0", "1"):
        return claimed == "1"
    return sys.stdout.isatty()


def print_table(title: str, columns: Sequence[Column | str], rows: list[list[str]], *, header: bool = True, console: Console | None = None, empty: str | None = None) -> None:
    """A table on a terminal (or on ``console``), TSV with a header line elsewhere. With no
    rows, a terminal gets the ``empty`` sentence instead of a bare header."""
    spec = [c if isinstance(c, Column) else Column(c) for c in columns]
    if console is None and not stdout_is_terminal():
        write_tsv(spec, rows, header=header)
        return
    if console is None:
        from rich.console import Console

        console = Console()
    if not rows and empty:
        console.print(empty, markup=False, highlight=False)
        return
    render_table(console, title, spec, rows, header=header)


def write_tsv(columns: Sequence[Column], rows: list[list[str]], *, header: bool = True) -> None:
    def clean(cell: str) -> str:
        # A tab or a line break inside a value would split it into fields or records.
        return cell.replace("\t", " ").replace("\r", " ").replace("\n", " ") if cell.strip() else "-"

    lines = ["\t".join(c.header.replace(" ", "_") or f"col{i}" for i, c in enumerate(columns))] if header else []
    lines += ["\t".join(clean(cell) for cell in row) for row in rows]
    sys.stdout.write("".join(line + "\n" for line in lines))


def render_table(console: Console, title: str, columns: Sequence[Column], rows: list[list[str]], *, header: bool = True) -> None:
    rows, notes = _move_notes(columns, rows)
    # A column of notes with nothing to say (no errors) takes no room.
    shown = [i for i, c in enumerate(columns) if not (c.note and not any(row[i].strip() for row in rows))]
    for index in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: (-columns[i].drop, -i)):
        if _needed_width(console, columns, rows, shown, header) <= console.width:
            break
        if index in shown:
            shown.remove(index)
    # Only when even the kept columns cannot fit (a very narrow terminal) may the identifying
    # ones wrap; they fold onto a second line then, never lose their end to "…".
    squeezed = _needed_width(console, columns, rows, shown, header) > console.width
    console.print(_table(title, columns, rows, shown, header, squeezed))
    for number, text in notes:
        console.print(f"[{number}] {text}", markup=False, highlight=False, soft_wrap=False)


def _needed_width(console: Console, columns: Sequence[Column], rows: list[list[str]], shown: list[int], header: bool) -> int:
    """The table's width with every column whole, except that a wrapping column (a path or a
    note) may fold down to WRAP_MIN."""
    from rich.measure import Measurement

    unbounded = console.options.update(max_width=1 << 16)  # natural widths, not clamped to the terminal's
    natural = Measurement.get(console, unbounded, _table("", columns, rows, shown, header, False)).maximum
    for i in shown:
        if columns[i].wrap or columns[i].note:
            alone = Measurement.get(console, unbounded, _table("", columns, rows, [i], header, False)).maximum
            natural -= max(0, alone - WRAP_MIN)
    return natural


def _move_notes(columns: Sequence[Column], rows: list[list[str]]) -> tuple[list[list[str]], list[tuple[int, str]]]:
    notes: list[tuple[int, str]] = []
    moved = []
    for row in rows:
        row = list(row)
        for i, column in enumerate(columns):
            if column.note and len(row[i]) > NOTE_INLINE:
                notes.append((len(notes) + 1, row[i]))
                row[i] = f"[{len(notes)}]"
        moved.append(row)
    return moved, notes


def _table(title: str, columns: Sequence[Column], rows: list[list[str]], shown: list[int], header: bool, squeezed: bool) -> Any:
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", show_header=header, box=None if not header else _box(), pad_edge=False, collapse_padding=True)
    for i in shown:
        wraps = columns[i].wrap or columns[i].note or squeezed
        # rich narrows only the columns that may wrap; the others keep their whole width.
        table.add_column(columns[i].header, no_wrap=not wraps, overflow="fold", ratio=1 if columns[i].wrap else None)
    for row in rows:
        table.add_row(*(row[i] for i in shown), end_section=False)
    return table


def _box() -> Any:
    from rich import box

    return box.SIMPLE_HEAD  # no side walls: three fewer characters per column than the default


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def human_ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return short_duration(max(0.0, time.time() - timestamp)) + " ago"


def short_duration(seconds: float) -> str:
    """The largest unit or two: 45s, 3m12s, 2h5m, 4d3h (fits a narrow column)."""
    seconds = int(seconds)
    for size, unit, smaller, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"), (60, "m", 1, "s")):
        if seconds >= size:
            rest = (seconds % size) // smaller
            return f"{seconds // size}{unit}" + (f"{rest}{small_unit}" if rest else "")
    return f"{seconds}s"


def short_time(timestamp: float, now: float | None = None) -> str:
    """HH:MM:SS today, 'Nov 29 14:02' this year, '2025-11-29' before: never wider than 12."""
    now = time.time() if now is None else now
    at, today = time.localtime(timestamp), time.localtime(now)
    if at[:3] == today[:3]:
        return time.strftime("%H:%M:%S", at)
    if at.tm_year == today.tm_year:
        return time.strftime("%b %d %H:%M", at)
    return time.strftime("%Y-%m-%d", at)
