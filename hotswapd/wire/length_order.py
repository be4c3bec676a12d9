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

_STR_PIECES = re.compile(r"\w+|[^\w\s]")
_BYTE_PIECES = re.compile(rb"\w+|[^\w\s]")  # non-ASCII bytes count one each: about right for CJK


def length_key(text: str | bytes) -> int:
    """Words plus punctuation marks: a tokenizer-free estimate of a text's tokens, to sort by."""
    pattern = _BYTE_PIECES if isinstance(text, bytes) else _STR_PIECES
    return sum(1 for _ in pattern.finditer(text))  # type: ignore[arg-type]
