"""A progress bar for jobs that read a file: rows, rate and ETA (by how far the file is read)."""

import sys
import time
from typing import Any


class RowProgress:
    """A progress bar on stderr when it is a terminal (rows, rate, ETA by the input read)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._display: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._display = Progress(
            BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )
        self._display.start()
        task = self._display.add_task("rows", total=self._reader.size(), rows=0, rate=0.0)
        started = time.perf_counter()
        first: list[int] = []

        def on_rows(rows: int) -> None:
            first.append(rows) if not first else None
            done = rows - first[0]
            self._display.update(task, completed=self._reader.position(), rows=rows, rate=done / max(time.perf_counter() - started, 1e-9))

        return on_rows

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()
