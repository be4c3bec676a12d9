"""A request's text, decoded from the wire once.

The daemon receives texts as UTF-8 frames. Each is decoded here, once, when the request is
validated on the socket thread; everything after (prompts, preprocessing, the length plan,
the batch, the cache key) works on that ``str``. Before, a text was decoded up to four times
on its way to the model (validation, prompts, the length plan, the batch).
"""

from __future__ import annotations

from hotswapd.errors import InvalidText


def wire_text(frame: bytes | memoryview, index: int) -> str:
    """Text ``index`` of a request; a frame that is not UTF-8 is the request's error."""
    try:
        return str(frame, "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidText(f"text {index} is not valid UTF-8 (byte {exc.start})", index) from exc


def utf8_size(text: str | bytes) -> int:
    """Bytes of ``text`` as UTF-8, without encoding an ASCII text (``isascii`` is a flag read)."""
    if isinstance(text, bytes):
        return len(text)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
