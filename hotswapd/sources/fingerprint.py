"""A fingerprint of a version's weights: what exactly produced a vector.

The hash covers every file's relative path and content, so two copies of the same model
agree and any change to a weight or tokenizer file changes it. Computed once per load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hotswapd.errors import ModelLoadError

CHUNK = 1 << 20


def fingerprint(path: Path) -> str:
    if not (path.is_dir() or path.is_file()):
        # A device (/dev/zero), a FIFO or a socket would be read forever.
        raise ModelLoadError(f"source {path} is not a regular file or a directory")
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]
