"""A stream's texts sent in length order within windows, its answers put back in input order.

A batch is padded to its longest text, so a model's throughput on a stream depends on how
alike in length the texts of each batch are: sentence-transformers sorts all its input
by length before batching. A stream cannot sort everything without holding everything,
so it sorts within windows of ``window`` texts (bounded memory): each window's texts go
out as length-sorted chunks, and the rows that come back are put back in the caller's
chunks, in the caller's order. A text error names the text by its input position.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hotswapd.errors import InvalidText, TextTooLong
from hotswapd.wire.length_order import length_key
from hotswapd.wire.protocol import VECTOR_DTYPE

Text = str | bytes


class _Answer(Protocol):
    """What this module needs of hotswapd.client.connection.EncodeResult (which uses this module)."""

    model: str
    version: str
    fingerprint: str | None
    dim: int
    count: int
    cached: int
    truncated: int
    chunked: int
    buffer: memoryview

    def __init__(self, result: dict[str, Any], buffer: memoryview) -> None: ...


EncodeResult = TypeVar("EncodeResult", bound=_Answer)

SORT_WINDOW = 2048  # texts: 8 requests of 256; at 384 float32 dimensions its answers take 3 MiB


@dataclass
class _Window:
    start: int  # input position of its first text
    sizes: list[int]  # the caller's chunk sizes
    order: list[int]  # order[i]: the window position of the i-th text sent
    sent_chunks: int  # how many sorted chunks it went out as


class LengthSortedStream:
    """``chunks`` regrouped: iterate :meth:`sorted_chunks` into the encoder, then pass the
    encoder's results (one per sorted chunk, in order) to :meth:`restored`."""

    def __init__(self, chunks: Iterable[Sequence[Text]], window: int = SORT_WINDOW, piece: Callable[[], int] | None = None) -> None:
        self._chunks = iter(chunks)
        self._window = window
        self._piece = piece  # the size of the next window's pieces (a progress display's pace)
        self._windows: deque[_Window] = deque()

    def sorted_chunks(self) -> Iterator[list[Text]]:
        start = 0
        while True:
            texts: list[Text] = []
            sizes: list[int] = []
            for chunk in self._chunks:
                texts.extend(chunk)
                sizes.append(len(chunk))
                if len(texts) >= self._window:
                    break
            if not texts:
                return
            keys = [length_key(text) for text in texts]
            order = sorted(range(len(texts)), key=keys.__getitem__)
            step = max(sizes)  # the caller's chunk size: the daemon's limits already fit it
            if self._piece is not None:
                step = max(1, min(step, self._piece()))
            pieces = [[texts[i] for i in order[at : at + step]] for at in range(0, len(order), step)]
            self._windows.append(_Window(start, sizes, order, len(pieces)))
            start += len(texts)
            yield from pieces

    def restored(self, results: Iterator[EncodeResult]) -> Iterator[EncodeResult]:
        sent = 0  # input position of the first text of the current window's answers
        while True:
            try:
                first = next(results)
            except StopIteration:
                return
            except (InvalidText, TextTooLong) as exc:
                raise self._in_input_terms(exc, sent) from None
            window = self._windows.popleft()
            answers = [first]
            for _ in range(window.sent_chunks - 1):
                try:
                    answers.append(next(results))
                except (InvalidText, TextTooLong) as exc:
                    raise self._in_input_terms(exc, sent, window) from None
            row = len(answers[0].buffer) // max(answers[0].count, 1)
            rows: list[Any] = [None] * len(window.order)
            sorted_rows = (answer.buffer[i * row : (i + 1) * row] for answer in answers for i in range(answer.count))
            for position, data in zip(window.order, sorted_rows, strict=True):
                rows[position] = data
            head = {"dtype": VECTOR_DTYPE, "model": first.model, "version": first.version, "fingerprint": first.fingerprint, "dim": first.dim}
            if getattr(first, "ranges", None) is not None:  # the version's calibration, asked for with the rows
                head.update(ranges=first.ranges, calibration=first.calibration)
            # Counts of the window (cut, chunked, cached texts) go with its first chunk: callers add them up.
            counts = {key: sum(getattr(answer, key) for answer in answers) for key in ("cached", "truncated", "chunked")}
            at = 0
            for size in window.sizes:
                yield type(first)({**head, "count": size, **counts}, memoryview(b"".join(rows[at : at + size])))
                counts = {key: 0 for key in counts}
                at += size
            sent += len(window.order)

    def _in_input_terms(self, exc: InvalidText | TextTooLong, sent: int, window: _Window | None = None) -> Exception:
        """The encoder named the text by its place in the sorted stream; name it by the input's."""
        window = window or (self._windows[0] if self._windows else None)
        if exc.index is None or window is None:
            return exc
        position = window.start + window.order[exc.index - sent]
        return type(exc)(exc.message.replace(f"input text {exc.index + 1}", f"input text {position + 1}", 1), position)


def sorted_stream(chunks: Iterable[Sequence[Text]], window: int, encode: Callable[[Iterator[list[Text]]], Iterator[EncodeResult]],
                  piece: Callable[[], int] | None = None) -> Iterator[EncodeResult]:
    """``encode`` (chunks in, results out, in order) fed in length order, answered in input order."""
    stream = LengthSortedStream(chunks, window, piece)
    return stream.restored(encode(stream.sorted_chunks()))
