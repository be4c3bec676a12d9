"""The order texts are batched in: by an estimate of their tokens, on both sides of the wire.

A batch is padded to its longest text, so what a batch costs depends on how alike its
texts' token counts are. Neither the client (which sorts a stream within windows) nor the
daemon's batcher (which splits a request into pieces) holds the model's tokenizer, so both
sort by an estimate. Characters or bytes were a poor one: sorted by length in characters,
pieces of 64 BBC sentences were padded to 82 % useful tokens and OpenVINO int8 ran 875
texts/s against 966 sorted by true tokens (AMD EPYC Zen 4, 2 cores). Words and punctuation
marks counted apart, the way WordPiece and BPE pre-tokenise, reach 90 % and 938/s.
"""

from __future__ import annotations

import re

# An ASCII word is one piece; every other mark that is not a space is one too: punctuation,
# and each character of a script written without spaces (CJK, Thai), which a \w+ run would
# count as one piece however long (a tokenizer splits it about a character a token).
_STR_PIECES = re.compile(r"[A-Za-z0-9]+|\S")
_BYTE_PIECES = re.compile(rb"[A-Za-z0-9]+|\S")  # a non-ASCII character counts once a byte
LONG_CHARS = 2048  # past this, a quarter of the length: counting would cost the socket thread ~60 ns a byte


def length_key(text: str | bytes) -> int:
    """Words plus other marks: a tokenizer-free estimate of a text's tokens, to sort by."""
    if len(text) > LONG_CHARS:
        return len(text) // 4
    pattern = _BYTE_PIECES if isinstance(text, bytes) else _STR_PIECES
    return len(pattern.findall(text))  # type: ignore[arg-type]
