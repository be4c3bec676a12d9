"""``hs index bridge``: fit and measure a bridge through the daemon (see :mod:`.bridge`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotswapd.client.connection import Client
from hotswapd.corpus.bridge import BRIDGE_FORMAT, BridgeManifest, fit, recall_at_k, write_bridge
from hotswapd.corpus.files import CorpusError, now

MIN_SAMPLE = 50
CHUNK = 256


@dataclass
class BridgeFit:
    manifest: BridgeManifest
    output: Path


def fit_bridge(client: Client, new: str, old_version: str, sample: Iterable[str], output: Path, *, held_out: float = 0.2, limit: int = 20000) -> BridgeFit:
    """Fit ``new``'s (``NAME@VER``) map into the corpus of ``NAME@old_version``, measured on
    the held-out part of ``sample``, and write it to ``output``."""
    model, sep, new_version = new.partition("@")
    if not sep or not new_version:
        raise CorpusError(f"name the version to bridge: {new}@VERSION")
    old = f"{model}@{old_version}"
    described = client.preload(old)
    corpus = described.get("corpus") or {}
    if not corpus.get("path") or corpus.get("bridge"):
        raise CorpusError(f"{old} has no corpus of its own to bridge into ({corpus.get('problem') or 'no embeddings_path'})")
    # Distinct texts only: repeats tie, and ties rank alike on both sides (a sample of one
    # text repeated 60 times "measured" recall 1.0).
    texts = list(dict.fromkeys(text for _, text in zip(range(limit), sample, strict=False)))
    if len(texts) < MIN_SAMPLE:
        raise CorpusError(f"the sample has {len(texts)} distinct texts; a bridge needs at least {MIN_SAMPLE}")
    new_vectors, new_fingerprint = _encode(client, new, texts)
    old_vectors, old_fingerprint = _encode(client, old, texts)
    if corpus.get("built_by") not in (None, old_fingerprint):
        raise CorpusError(f"{old}'s corpus was built by fingerprint {corpus['built_by']}, and {old} is now {old_fingerprint}: rebuild the corpus first")
    cut = len(texts) - max(1, int(len(texts) * held_out))
    matrix, kind = fit(new_vectors[:cut], old_vectors[:cut])
    recall = recall_at_k(new_vectors[cut:], new_vectors[:cut], new_vectors[cut:] @ matrix, old_vectors[:cut])
    manifest = BridgeManifest(
        format=BRIDGE_FORMAT, model=model, from_version=new_version, from_fingerprint=new_fingerprint, to_version=old_version,
        to_fingerprint=corpus.get("built_by") or old_fingerprint, corpus=corpus["path"], kind=kind, from_dim=new_vectors.shape[1],
        to_dim=old_vectors.shape[1], recall_at_10=round(recall, 4), fitted_on=cut, held_out=len(texts) - cut, created=now(),
    )
    write_bridge(output, matrix, manifest)
    return BridgeFit(manifest, output)


def _encode(client: Client, version: str, texts: list[str]) -> tuple[np.ndarray, str]:
    chunks = [texts[start : start + CHUNK] for start in range(0, len(texts), CHUNK)]
    parts, fingerprint = [], None
    for result in client.encode_stream(chunks, version, normalize=True):
        if fingerprint not in (None, result.fingerprint):
            raise CorpusError(f"{version} changed while the sample was encoded; try again")
        fingerprint = result.fingerprint
        parts.append(np.array(result.embeddings))
    return np.concatenate(parts), str(fingerprint)
