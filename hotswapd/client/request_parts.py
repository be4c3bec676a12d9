"""What a request is made of before it goes out, and what a streamed answer passes through
on its way back: options, texts as UTF-8 frames, timeouts checked, errors named in the
caller's terms (hotswapd.client.connection sends and receives them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from hotswapd.client.encode_result import EncodeResult
from hotswapd.client.pace import Pace
from hotswapd.errors import InvalidText, TextTooLong

Text = str | bytes


def in_input_terms(receive: Callable[[], EncodeResult], start: int) -> EncodeResult:
    """A chunk's answer; a text error names the text by its position in the whole input
    ("input text 600", counted from 1, as a line number is), not inside the chunk."""
    try:
        return receive()
    except (InvalidText, TextTooLong) as exc:
        if exc.index is None:
            raise
        position = start + exc.index
        raise type(exc)(exc.message.replace(f"text {exc.index}", f"input text {position + 1}", 1), position) from None


def checked_seconds(value: float) -> float:
    """A timeout: NaN would pass every comparison and infinity cannot become milliseconds."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"a timeout must be a finite number of seconds above 0, not {value!r}")
    return float(value)


def options_of(normalize: bool | None, key: str | None, prompt: str | None) -> dict[str, Any]:  # those not left to the version
    return {name: value for name, value in (("normalize", normalize), ("key", key), ("prompt", prompt)) if value is not None}


def as_bytes(index: int, text: Text) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidText(f"text {index} cannot be encoded as UTF-8: {exc.reason}") from exc


def paced(results: Iterator[EncodeResult], pace: Pace) -> Iterator[EncodeResult]:
    """``results``, each answer's rows told to ``pace`` as it arrives."""
    for result in results:
        pace.answered(result.count)
        yield result
