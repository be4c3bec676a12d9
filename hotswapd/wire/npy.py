"""The ``.npy`` (version 1.0) header, written without numpy: ``hs encode -f npy`` and
``hs index build`` write matrices from reply frames that already are their rows."""

from __future__ import annotations

import struct


def npy_header(shape: tuple[int, ...], descr: str, size: int | None = None) -> bytes:
    """A header for a C-order array of ``shape`` and ``descr`` (``"<f4"``). Padded to a
    multiple of 64 bytes, or to exactly ``size`` bytes, so that a writer that learns the
    shape only at the end can write the real one over a placeholder in place."""
    dims = ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "")
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}"
    body = size - 10 if size is not None else len(text) + 1 + (-(10 + len(text) + 1) % 64)
    if len(text) + 1 > body:
        raise ValueError(f"shape {shape} does not fit a {size}-byte header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + (text.ljust(body - 1) + "\n").encode("ascii")
