"""Rows (number, id, text) from a data file, in file order, in constant memory.

- ``.txt``: one text per line; the id is the line number (from 1).
- ``.jsonl``: one JSON object per line; the text in ``text_field``, the id in ``id_field``
  (the line number when no id field is named and the rows have none).
- ``.csv``: a header row, then records (the standard library's csv module: quoted fields,
  embedded newlines).
- ``.parquet``: columns read in record batches with pyarrow (the ``files`` extra).

A row without a usable text (missing, not a string, empty), or over the limits (a line or
a csv field over 16 MiB, a txt or jsonl line that is not UTF-8) is a :class:`RowRejected`
naming the row and its id, never a silent skip; with ``on_error="skip"`` the reader yields it as a
:class:`Rejected` in its place (a job writes it to its rejects file) and goes on. ``position()`` tells how many bytes (or rows, for
parquet) were read, for a progress bar's ETA.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from hotswapd.errors import HotswapError

Format = Literal["txt", "jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("txt", "jsonl", "csv", "parquet")
LINE_LIMIT = 16 * 2**20
csv.field_size_limit(LINE_LIMIT)


class InputError(HotswapError):
    """A row (or the file) that cannot be read as asked, with where."""

    code = "input_error"


class RowRejected(InputError):
    """One row that cannot be used (the file itself is fine): where, its id, and why."""

    def __init__(self, unit: str, number: int, row_id: Any, reason: str) -> None:
        named = f"{unit} {number}" + (f" (id {row_id!r})" if row_id not in (None, number) else "")
        super().__init__(f"{named}: {reason}")
        self.rejected = Rejected(number, row_id, reason)


@dataclass(frozen=True)
class Row:
    number: int  # from 1: the line (txt, jsonl), the record (csv, parquet)
    id: Any
    text: str


@dataclass(frozen=True)
class Rejected:
    """A row skipped under ``on_error="skip"``: its number, its id when it had one, why."""

    number: int
    id: Any
    reason: str


def detect_format(path: Path, given: str | None) -> Format:
    name = given or path.suffix.lstrip(".").lower()
    if name == "ndjson":
        name = "jsonl"
    if name not in FORMATS:
        raise InputError(f"cannot tell the format of {path.name}: name one with --input-format ({', '.join(FORMATS)})")
    return name  # type: ignore[return-value]


class RowReader:
    def __init__(self, path: Path, fmt: Format, text_field: str = "text", id_field: str | None = None, on_error: str = "fail") -> None:
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error is 'fail' or 'skip', not {on_error!r}")
        self.path, self.format, self.text_field, self.id_field = path, fmt, text_field, id_field
        self.skip_bad_rows = on_error == "skip"
        self._ids_by_field: bool | None = None  # without id_field: whether rows carry an "id"
        self._handle: BinaryIO | None = None
        self._parquet_rows = 0
        self.rows_read = 0  # rows (and rejects) given so far: with position(), a progress bar's estimate
        self._end: int | None = None  # position() once the file is read and closed

    def size(self) -> int | None:
        """The total ``position()`` will reach: bytes, or rows for parquet."""
        if self.format == "parquet":
            return _parquet_file(self.path).metadata.num_rows
        return self.path.stat().st_size

    def position(self) -> int:
        if self.format == "parquet":
            return self._parquet_rows
        if self._handle is not None and not self._handle.closed:
            return self._handle.tell()
        return self._end or 0

    def __iter__(self) -> Iterator[Row | Rejected]:
        for row in self._rows():
            self.rows_read += 1
            yield row

    def _rows(self) -> Iterator[Row | Rejected]:
        if self.format == "parquet":
            yield from self._parquet()
            return
        try:
            self._handle = open(self.path, "rb")  # noqa: SIM115 -- closed below; tell() feeds the progress bar
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            if self.format == "txt":
                yield from self._txt(self._handle)
            elif self.format == "jsonl":
                yield from self._jsonl(self._handle)
            else:
                yield from self._csv(self._handle)
        finally:
            self._end = self._handle.tell() if not self._handle.closed else None
            self._handle.close()

    def _lines(self, handle: BinaryIO) -> Iterator[tuple[int, str | RowRejected]]:
        """Each line, or why it cannot be a row (over LINE_LIMIT, not UTF-8): read in bounded
        pieces, so a huge line costs no memory and, under ``on_error="skip"``, costs one row."""
        number = 0
        while line := handle.readline(LINE_LIMIT + 2):  # the limit, and room for CRLF
            number += 1
            if len(line.rstrip(b"\r\n")) > LINE_LIMIT:
                while not line.endswith(b"\n") and (line := handle.readline(LINE_LIMIT)):
                    pass  # the rest of it, dropped as it comes
                yield number, RowRejected("line", number, None, f"longer than {LINE_LIMIT // 2**20} MiB (is {self.path.name} a text file?)")
                continue
            try:
                # utf-8-sig on the first line: a byte-order mark (Notepad, Excel) is no text.
                yield number, line.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield number, RowRejected("line", number, None, f"not valid UTF-8 (byte {exc.start})")

    def _txt(self, handle: BinaryIO) -> Iterator[Row | Rejected]:
        for number, line in self._lines(handle):
            if isinstance(line, RowRejected):
                yield self._rejected(line)
                continue
            yield self._checked(lambda: Row(number, number, self._text(line, number)))  # noqa: B023 -- called at once

    def _jsonl(self, handle: BinaryIO) -> Iterator[Row | Rejected]:
        for number, line in self._lines(handle):
            if isinstance(line, RowRejected):
                yield self._rejected(line)
                continue
            if not line.strip():
                continue  # a blank line between records (a trailing newline) holds no row
            yield self._checked(lambda: self._json_record(line, number))  # noqa: B023 -- called at once

    def _json_record(self, line: str, number: int) -> Row:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise RowRejected("line", number, None, f"not JSON: {str(exc)[:100]}") from None
        if not isinstance(record, dict):
            raise RowRejected("line", number, None, f"a JSON {type(record).__name__}, not an object")
        return self._record(record, number, "line")

    def _csv(self, handle: BinaryIO) -> Iterator[Row | Rejected]:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")  # Excel writes a byte-order mark
        lines = _BoundedLines(text)
        try:
            reader = csv.reader(lines, strict=True)  # an unterminated quote is an error, not rows swallowed
            names = self._csv_record(reader, lines, 0)
            if names is None:
                return
            if isinstance(names, RowRejected):
                raise InputError(f"{self.path.name}: its header {names.message.partition(': ')[2]}")
            self._check_columns(names)
            number = 0
            while True:
                number += 1
                fields = self._csv_record(reader, lines, number)
                if fields is None:
                    return
                if isinstance(fields, RowRejected):
                    yield self._rejected(fields)
                    continue
                if not fields:  # a blank line holds no record (as csv.DictReader)
                    number -= 1
                    continue
                record = dict(zip(names, fields, strict=False))
                yield self._checked(lambda: self._record(record, number, "record"))  # noqa: B023 -- called at once
        except UnicodeDecodeError:  # the text layer decodes ahead of the record: no row to skip past
            raise InputError(f"{self.path.name} is not valid UTF-8 (after line {lines.number}); a csv file must be UTF-8 throughout") from None
        finally:
            text.detach()

    def _csv_record(self, reader: Iterator[list[str]], lines: _BoundedLines, number: int) -> list[str] | RowRejected | None:
        """The next record's fields; a record over the limits as a rejection naming it (the
        reader goes on at the next line); None at the end. Any other csv error (an
        unterminated quote) leaves nothing to go on with: an InputError naming the place."""
        try:
            fields = next(reader)
        except StopIteration:
            return None
        except _LineTooLong:
            at = lines.number
            lines.skip_record()
            return RowRejected("record", number, None, f"line {at} is longer than {LINE_LIMIT // 2**20} MiB")
        except csv.Error as exc:
            if "field limit" in str(exc):
                at = lines.number
                lines.skip_record()
                return RowRejected("record", number, None, f"a field is longer than {LINE_LIMIT // 2**20} MiB (at line {at})")
            raise InputError(f"{self.path.name}: record {number} (line {lines.number}): {exc}") from None
        lines.record_done()
        return fields

    def _rejected(self, rejected: RowRejected) -> Rejected:
        if not self.skip_bad_rows:
            raise rejected
        return rejected.rejected

    def _parquet(self) -> Iterator[Row]:
        table = _parquet_file(self.path)
        names = table.schema_arrow.names
        self._check_columns(names)
        id_column = self.id_field or ("id" if "id" in names else None)  # as jsonl and csv: 'id' when present
        columns = [self.text_field] + ([id_column] if id_column and id_column != self.text_field else [])
        number = 0
        for batch in table.iter_batches(batch_size=4096, columns=columns):
            texts = batch.column(self.text_field).to_pylist()
            ids = batch.column(id_column).to_pylist() if id_column else None
            for offset, value in enumerate(texts):
                number += 1
                record = {self.text_field: value}
                if ids is not None and id_column:
                    record[id_column] = ids[offset]
                yield self._checked(lambda: self._record(record, number, "row"))  # noqa: B023 -- called at once
            self._parquet_rows = number

    def _checked(self, make: Callable[[], Row]) -> Row | Rejected:
        try:
            return make()
        except RowRejected as exc:
            if not self.skip_bad_rows:
                raise
            return exc.rejected

    def _check_columns(self, names: list[str]) -> None:
        for field in (self.text_field, self.id_field):
            if field is not None and field not in names:
                raise InputError(f"{self.path.name} has no column {field!r} (it has: {', '.join(names[:20])})")

    def _record(self, record: dict[str, Any], number: int, unit: str) -> Row:
        row_id: Any = number
        if self.id_field is not None:
            if record.get(self.id_field) is None:
                raise RowRejected(unit, number, None, f"no {self.id_field!r} (the id field)")
            row_id = record[self.id_field]
            if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
                raise RowRejected(unit, number, None, f"the id {_short(row_id)} is a {type(row_id).__name__}; ids are strings or integers")
        elif self._auto_id(record, unit, number):
            row_id = record["id"]
            if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
                raise RowRejected(unit, number, None, f"the id {_short(row_id)} is a {type(row_id).__name__}; ids are strings or integers")
        if isinstance(row_id, str) and not _utf8(row_id):
            raise RowRejected(unit, number, None, "the id is not valid Unicode (a lone surrogate)")
        if self.text_field not in record:
            raise RowRejected(unit, number, row_id, f"no {self.text_field!r} field")
        return Row(number, row_id, self._text(record[self.text_field], number, unit, row_id))

    def _auto_id(self, record: dict[str, Any], unit: str, number: int) -> bool:
        """Without --id-field, the first row decides: an ``id`` field there means every row
        has one (a row without it is refused, not numbered: a number could repeat a real
        id); none there means every row is numbered."""
        if self._ids_by_field is None:
            self._ids_by_field = "id" in record
        if self._ids_by_field and "id" not in record:
            raise RowRejected(unit, number, None, "no 'id' field, while the first row has one")
        return self._ids_by_field

    def _text(self, value: Any, number: int, unit: str = "line", row_id: Any = None) -> str:
        if not isinstance(value, str):
            raise RowRejected(unit, number, row_id, f"the text is a {type(value).__name__}, not a string")
        if not _utf8(value):
            raise RowRejected(unit, number, row_id, "the text is not valid Unicode (a lone surrogate)")
        if not value.strip():
            raise RowRejected(unit, number, row_id, "the text is empty")
        return value


class _LineTooLong(Exception):
    """Raised through the csv reader by :class:`_BoundedLines`: a line over LINE_LIMIT."""


class _BoundedLines:
    """The csv reader's input: lines of at most LINE_LIMIT characters, counted; a longer
    one raises :class:`_LineTooLong` once, its rest dropped as it is read (never held).

    It also follows the quotes of the record being read (their count's parity), so that
    after a record over the limits the reader goes on at the next *record*, not at the next
    line inside the bad record's quoted field (which would read as rows of their own)."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._text = text
        self.number = 0
        self._open_quote = False  # inside a quoted field of the current record

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(LINE_LIMIT + 2)  # the limit, and room for CRLF
        if not line:
            raise StopIteration
        self.number += 1
        self._follow(line)
        if len(line.rstrip("\r\n")) > LINE_LIMIT:
            self._drop_rest(line)
            raise _LineTooLong
        return line

    def record_done(self) -> None:
        """The csv reader returned a whole record: the next line begins a new one."""
        self._open_quote = False

    def skip_record(self) -> None:
        """After a record over the limits: drop its lines still to come (its quoted field
        goes on), up to the line that closes it."""
        while self._open_quote and (line := self._text.readline(LINE_LIMIT + 2)):
            self.number += 1
            self._follow(line)
            self._drop_rest(line)
        self._open_quote = False

    def _drop_rest(self, line: str) -> None:
        while not line.endswith(("\n", "\r")) and (line := self._text.readline(LINE_LIMIT)):
            self._follow(line)

    def _follow(self, piece: str) -> None:
        if piece.count('"') % 2:  # an escaped quote ("") counts twice: no change
            self._open_quote = not self._open_quote


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading parquet needs pyarrow: pip install 'hotswap[files]'") from None
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"cannot read {path} as parquet: {exc}") from None


def _short(value: Any) -> str:
    """A value as a message shows it: its repr, cut (a bad id may be a huge object)."""
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."
