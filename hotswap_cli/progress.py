"""A progress bar for jobs that read a file (``hs encode --input``, ``hs index build``):
rows done, a bar that ends at 100 %, rate and ETA, updated as each answer comes."""

from __future__ import annotations

import sys
import time
from typing import Any


class RowProgress:
    """On stderr when it is a terminal; ``with RowProgress(reader) as progress`` gives
    ``progress.on_rows`` (the job's committed rows) and ``progress.pace`` (each answer,
    several a second) to hand to the job; both None elsewhere."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._display: Any = None
        self.on_rows: Any = None
        self.pace: Any = None
        self._committed = 0  # rows the job has written
        self._answered = 0  # rows the daemon has answered (this run)
        self._answered_at_commit = 0

    def __enter__(self) -> RowProgress:
        if not sys.stderr.isatty():
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from hotswapd.client.pace import Pace
        from hotswapd.jobs.engine import CHUNK

        self._display = Progress(
            BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )
        self._display.start()
        self._task = self._display.add_task("rows", total=100.0, rows=0, rate=0.0)
        self._size = self._reader.size()
        self._started = time.perf_counter()
        self.on_rows = self._on_committed
        self.pace = Pace(CHUNK, on_rows=self._on_answered)
        return self

    def _on_committed(self, rows: int) -> None:
        self._committed, self._answered_at_commit = rows, self._answered
        self._refresh()

    def _on_answered(self, rows: int) -> None:
        self._answered = rows
        self._refresh()

    def _refresh(self) -> None:
        # Rows written, and those answered since (written in a moment).
        rows = self._committed + max(0, self._answered - self._answered_at_commit)
        rate = self._answered / max(time.perf_counter() - self._started, 1e-9)
        self._display.update(self._task, completed=100.0 * self._fraction(rows), rows=rows, rate=rate)

    def _fraction(self, rows: int) -> float:
        """Rows done against the rows the input holds: the rows read so far scaled by how far
        through the file they reach (exact for parquet, and once the file is read)."""
        read, position = self._reader.rows_read, self._reader.position()
        if not read or not position or not self._size:
            return 0.0
        return min(1.0, rows / max(read * self._size / position, 1.0))

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()
