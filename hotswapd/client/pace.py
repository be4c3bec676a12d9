"""How a streamed job's progress is seen: rows answered so far, and pieces small enough that
answers come several times a second (what a progress display needs; a pipe needs none).

The stream asks :meth:`Pace.piece` for the size of the pieces of each length-sorted window
and reports each answer to :meth:`Pace.answered`; at the daemon's measured rate, a piece
then takes about 1/``per_second`` s. Larger pieces cost a little less per text, so
without a display the stream keeps the caller's chunk size.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SMALLEST_PIECE = 16


class Pace:
    def __init__(self, largest: int, per_second: float = 6.0, on_rows: Callable[[int], None] | None = None) -> None:
        self.largest = max(1, largest)
        self.per_second = per_second
        self.rows = 0  # answered so far
        self._on_rows = on_rows
        self._started: float | None = None
        self._first = 0  # rows of the first answer, which the rate leaves out
        self._lock = threading.Lock()

    def piece(self) -> int:
        """Texts per request now: small pieces until a rate is known (the first answer may
        include a model's load), then what the rate since the first answer answers in
        1/per_second s."""
        with self._lock:
            if self._started is None or self.rows == self._first:
                return min(self.largest, 4 * SMALLEST_PIECE)
            rate = (self.rows - self._first) / max(time.perf_counter() - self._started, 1e-6)
        return max(min(SMALLEST_PIECE, self.largest), min(self.largest, int(rate / self.per_second)))

    def answered(self, count: int) -> None:
        with self._lock:
            if self._started is None:  # the rate counts from the first answer on
                self._started, self._first = time.perf_counter(), count
            self.rows += count
            rows = self.rows
        if self._on_rows is not None:
            self._on_rows(rows)
