"""The named text preprocessors a version may list in ``preprocess``, applied in order."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Literal

Preprocessor = Literal["strip", "lowercase", "nfkc", "collapse_whitespace"]

PREPROCESSORS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lowercase": str.lower,
    "nfkc": lambda text: unicodedata.normalize("NFKC", text),  # full-width and compatibility forms folded
    "collapse_whitespace": lambda text: " ".join(text.split()),  # runs of spaces, tabs and newlines become one space
}


def apply(names: list[str], text: str) -> str:
    for name in names:
        text = PREPROCESSORS[name](text)
    return text
