"""A stream sent in length order within windows comes back in the caller's order (issue 16:
batches of alike lengths are padded less)."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hotswapd.wire.length_order import length_key
from hotswapd.client.encode_result import EncodeResult
from hotswapd.errors import TextTooLong
from hotswapd.wire.protocol import VECTOR_DTYPE
from hotswapd.client.stream_order import sorted_stream
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def length_encoder(sent: list[list[str]], refuse: str | None = None):  # type: ignore[no-untyped-def]
    """Encodes a text as [its length, its first character's code]; records what it was sent."""

    def encode(chunks: Iterator[list[str]]) -> Iterator[EncodeResult]:
        position = 0
        for chunk in chunks:
            sent.append(list(chunk))
            if refuse in chunk:
                index = position + chunk.index(refuse)
                raise TextTooLong(f"input text {index + 1}: too long", index)
            data = b"".join(struct.pack("<2f", len(text), ord(text[0])) for text in chunk)
            yield EncodeResult({"dtype": VECTOR_DTYPE, "model": "m", "version": "v", "dim": 2, "count": len(chunk), "truncated": 1}, memoryview(data))
            position += len(chunk)

    return encode


def test_rows_come_back_in_the_callers_chunks_and_order() -> None:
    rng = random.Random(3)
    texts = [" ".join(rng.choice(["ab", "cde", "f,"]) for _ in range(rng.randint(1, 20))) for _ in range(1000)]
    sizes = [rng.randint(1, 90) for _ in range(60)]
    chunks, at = [], 0
    for size in sizes:
        if at < len(texts):
            chunks.append(texts[at : at + size])
            at += size
    sent: list[list[str]] = []
    results = list(sorted_stream(chunks, 256, length_encoder(sent)))
    assert [r.count for r in results] == [len(c) for c in chunks]
    rows = np.vstack([r.embeddings for r in results])
    np.testing.assert_array_equal(rows, [[len(t), ord(t[0])] for t in texts[:at]])
    # Sent in length order within each window: each request's texts are of alike length.
    assert all(length_key(piece[0]) <= length_key(piece[-1]) for piece in sent)  # sorted by estimated tokens
    assert sum(length_key(p[-1]) - length_key(p[0]) for p in sent) < sum(max(map(length_key, c)) - min(map(length_key, c)) for c in chunks) / 3
    assert sum(r.truncated for r in results) == len(sent)  # counts survive the regrouping


def test_a_refused_text_is_named_by_its_input_position() -> None:
    texts = [f"{'x' * (i % 17 + 1)}{i}" for i in range(700)]
    with pytest.raises(TextTooLong) as caught:
        list(sorted_stream([texts[i : i + 100] for i in range(0, 700, 100)], 300, length_encoder([], refuse=texts[555])))
    assert caught.value.index == 555 and caught.value.message.startswith("input text 556:")


def test_a_daemon_stream_is_the_same_sorted_or_not(start: StartDaemon, tmp_path: Path) -> None:
    rng = random.Random(5)
    texts = [" ".join(rng.choice(["alpha", "be", "gamma", "delta"]) for _ in range(rng.randint(1, 40))) for _ in range(3000)]
    chunks = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    with start(fake_config(tmp_path, {"v1": {}}, extra="[cache]\nmax_mb = 0\n")) as daemon, daemon.client() as client:
        plain = np.vstack([r.embeddings for r in client.encode_stream(chunks, sort_window=0)])
        fakebackend.CONTROLS["v1"].seen.clear()
        ordered = np.vstack([r.embeddings for r in client.encode_stream(chunks)])
        seen = fakebackend.CONTROLS["v1"].seen
    np.testing.assert_array_equal(ordered, plain)
    # The first request held the window's 256 shortest texts, not the input's first 256.
    assert sorted(map(length_key, seen[:256])) == sorted(map(length_key, texts[:2048]))[:256] != sorted(map(length_key, texts[:256]))
