"""An example third-party backend: 26-dim vectors of letter counts, times ``scale``.

It shows the whole backend contract: a module with ``load(path, version)`` returning an
object with ``dimension``, ``device``, ``encode(texts, normalize=...)`` and ``close()``,
and an optional pydantic ``Options`` for its own config keys.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scale: float = 1.0


def letter_vector(text: str, scale: float) -> np.ndarray:
    lowered = text.lower()
    return np.array([lowered.count(letter) * scale for letter in string.ascii_lowercase], dtype=np.float32)


class LetterCounts:
    dimension = 26
    device = "cpu"

    def __init__(self, scale: float) -> None:
        self._scale = scale

    def encode(self, texts: list[str], *, normalize: bool) -> np.ndarray:
        vectors = np.stack([letter_vector(text, self._scale) for text in texts])
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def close(self) -> None:
        pass


def load(path: Path, version: Any) -> LetterCounts:
    return LetterCounts(version.options.scale)
