"""The embedding-space guard: may vectors of one version be compared with another's?

Two versions share a space only if they agree on dimension, pooling, normalisation and
tokenizer vocabulary, and, when one declares ``compatible_with`` the other, if their
vectors for the same texts actually agree. An index built with one version silently
breaks when queried with vectors from an incompatible one, so a switch checks first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hotswapd.text.probe_texts import PROBE_TEXTS

if TYPE_CHECKING:
    from hotswapd.pipeline.loaded import LoadedVersion

def describe_space(loaded: LoadedVersion) -> dict[str, Any]:
    """What defines a version's vector space, as far as its backend can tell."""
    space: dict[str, Any] = {"dimension": loaded.embedder.dimension, "normalize": loaded.config.normalize}
    if loaded.caps.space is not None:
        space.update(loaded.caps.space())
    return space


def incompatibilities(current: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """Human-readable differences between two spaces; empty when they match."""
    problems = []
    for key in sorted(set(current) | set(target)):
        if current.get(key) != target.get(key):
            problems.append(f"{key} {current.get(key)!r} -> {target.get(key)!r}")
    return problems


def agreement(current: LoadedVersion, target: LoadedVersion, texts: list[str] = PROBE_TEXTS) -> tuple[float, float]:
    """Mean and minimum cosine between the two versions' vectors of the same texts."""
    import numpy as np

    a = np.asarray(current.embedder.encode(texts, normalize=True), dtype=np.float64)
    b = np.asarray(target.embedder.encode(texts, normalize=True), dtype=np.float64)
    if a.shape != b.shape:
        return -1.0, -1.0
    cosine = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cosine.mean()), float(cosine.min())
