"""Compact vectors: float32 rows as float16, int8, uint8, binary or ubinary, with the
semantics of sentence-transformers' ``quantize_embeddings`` (so a vector from hotswapd
and one quantised in a notebook agree bit for bit).

- ``int8`` / ``uint8``: each dimension cut into 255 steps between a calibration minimum
  and maximum (``ranges``, shape 2 x dim), floored and clipped; int8 is shifted by -128.
- ``binary`` / ``ubinary``: the sign bits (``> 0``), packed 8 per byte (``dim / 8`` bytes a
  row); binary is shifted by -128 into int8.
- ``float16``: a cast.

Used on both sides of the wire: the daemon sends a version's calibration ranges with the
float rows when asked, and the client, the CLI and the HTTP endpoint make the compact rows.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DTYPES = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
CALIBRATED = ("int8", "uint8")  # the output types that need a version's ranges


def quantize(vectors: np.ndarray, dtype: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``vectors`` (float32, n x dim) as ``dtype``; ``ranges`` (2 x dim) for int8/uint8."""
    import numpy as np

    if dtype == "float32":
        return np.asarray(vectors, dtype=np.float32)
    if dtype == "float16":
        return np.asarray(vectors, dtype=np.float16)
    if dtype in CALIBRATED:
        if ranges is None:
            raise ValueError(f"{dtype} needs calibration ranges")
        ranges = np.asarray(ranges, dtype=np.float32)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        values = np.clip(np.floor((vectors - starts) / steps), 0, 255)
        return values.astype(np.uint8) if dtype == "uint8" else (values - 128).astype(np.int8)
    if dtype == "binary":
        return (np.packbits(vectors > 0, axis=-1) - 128).astype(np.int8)
    if dtype == "ubinary":
        return np.packbits(vectors > 0, axis=-1)
    raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(DTYPES)}")


def calibration_ranges(vectors: np.ndarray) -> np.ndarray:
    """Per-dimension minimum and maximum of a sample's vectors (2 x dim, float32)."""
    import numpy as np

    return np.vstack((vectors.min(axis=0), vectors.max(axis=0))).astype(np.float32)


def ranges_fingerprint(ranges: np.ndarray) -> str:
    """Names the ranges an int8/uint8 row was made with: rows of two ranges do not compare."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(ranges, dtype="<f4").tobytes()).hexdigest()[:16]


def row_length(dtype: str, dim: int) -> int:
    """Values per row: the packed types hold 8 dimensions a byte."""
    return (dim + 7) // 8 if dtype in ("binary", "ubinary") else dim


def numpy_dtype(dtype: str) -> str:
    """The .npy descr of a row value of ``dtype``."""
    return {"float32": "<f4", "float16": "<f2", "int8": "|i1", "uint8": "|u1", "binary": "|i1", "ubinary": "|u1"}[dtype]
