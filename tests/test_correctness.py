"""What only the real model can prove: the daemon's vectors are sentence-transformers' vectors."""

from __future__ import annotations

import numpy as np
import pytest

from hotswapd import Client
from tests.tinymodel import minilm_dir

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Shares in the company rose 5% after the results were published on Tuesday.",
    "Ünïcödé, emoji 🚀 and CJK 漢字 all tokenise",
    " ",  # whitespace only: a text the daemon takes (an empty one it refuses, as every door does)
    " ".join(["a very long text that will be truncated"] * 200),
]


@pytest.mark.slow
def test_daemon_matches_in_process_sentence_transformers(client: Client) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    served = client.encode(TEXTS, model="minilm").embeddings
    cosine = np.sum(reference * served, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(served, axis=1))
    assert served.shape == (len(TEXTS), 384)
    assert cosine.min() >= 0.9999, cosine

    one = client.encode(["hello world"], model="minilm").embeddings[0]
    assert float(one @ reference[0]) >= 0.9999
