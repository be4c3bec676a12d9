"""Pooling token embeddings into one vector per text, in numpy, as sentence-transformers does.

Shared by every backend that gets token embeddings rather than sentence vectors (ONNX,
plain transformers, a remote endpoint), so they all pool the same way.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hotswapd.errors import ModelLoadError

PoolingName = Literal["mean", "cls", "max", "last-token"]
POOLING_NAMES: tuple[str, ...] = ("mean", "cls", "max", "last-token")
# The spelling sentence-transformers' get_pooling_mode_str() uses, so the switch guard
# sees an ONNX copy and the sentence-transformers original as the same space.
ST_SPELLING = {"mean": "mean", "cls": "cls", "max": "max", "last-token": "lasttoken", "lasttoken": "lasttoken"}
# Modes only a sentence-transformers pooling config names; supported so such models load.
_ST_ONLY = ("mean_sqrt_len_tokens", "weightedmean")


def checked_mode(mode: str) -> str:
    """The mode in sentence-transformers' spelling; ModelLoadError for one we cannot compute."""
    parts = [ST_SPELLING.get(part, part) for part in mode.split("+")]
    unknown = [part for part in parts if part not in ST_SPELLING.values() and part not in _ST_ONLY]
    if unknown:
        raise ModelLoadError(f"unknown pooling {unknown[0]!r}; known: {', '.join(POOLING_NAMES + _ST_ONLY)}")
    return "+".join(parts)


def choose_mode(configured: str | None, from_model: str | None) -> str:
    """The version's pooling option, else the model directory's own config, else mean."""
    return checked_mode(configured or from_model or "mean")


def pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """``tokens`` (batch, seq, dim), ``mask`` (batch, seq) of 0/1 -> (batch, dim) float32."""
    tokens = tokens.astype(np.float32, copy=False)
    weights = mask.astype(np.float32)[:, :, None]
    parts = []
    for name in mode.split("+"):
        name = ST_SPELLING.get(name, name)
        if name == "mean":
            parts.append((tokens * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None))
        elif name == "cls":
            parts.append(tokens[:, 0])
        elif name == "max":
            parts.append(np.where(weights > 0, tokens, np.float32(-1e9)).max(axis=1))
        elif name == "mean_sqrt_len_tokens":
            parts.append((tokens * weights).sum(axis=1) / np.sqrt(np.clip(weights.sum(axis=1), 1e-9, None)))
        elif name == "weightedmean":
            positions = weights * np.arange(1, tokens.shape[1] + 1, dtype=np.float32)[None, :, None]
            parts.append((tokens * positions).sum(axis=1) / np.clip(positions.sum(axis=1), 1e-9, None))
        elif name == "lasttoken":
            last = np.maximum(mask.sum(axis=1).astype(np.int64) - 1, 0)
            parts.append(tokens[np.arange(tokens.shape[0]), last])
        else:
            raise ValueError(f"unknown pooling {name!r}; known: {', '.join(POOLING_NAMES)}")
    return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0], dtype=np.float32)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)
