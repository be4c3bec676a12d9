"""The seam between the daemon and the libraries that compute embeddings.

The daemon core knows a backend only as a *loader*: a callable that takes the local path
of a version's files and its :class:`~hotswapd.config.VersionConfig`, and returns an
:class:`Embedder`. Loaders are named in :data:`BACKENDS` as ``"module:attr"`` strings and
imported on first use, so torch and friends are imported by the daemon only when a
version of that backend is loaded, and never by the CLI.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from hotswapd.config import VersionConfig

BACKENDS: dict[str, str] = {
    "sentence-transformers": "hotswapd.backends.sentence_transformers:load",
}


class Embedder(Protocol):
    """What a loaded model version offers the daemon."""

    dimension: int
    device: str

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        """Return a C-contiguous float32 array of shape (len(texts), dimension)."""
        ...

    def close(self) -> None:
        """Release what the model holds (GPU memory, sessions); called once, after the last use."""
        ...


Loader = Callable[[Path, "VersionConfig"], Embedder]


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def get_loader(name: str) -> Loader:
    module_name, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
