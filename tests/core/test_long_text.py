"""Texts over a version's maximum tokens: truncated and counted, refused, or chunked and
averaged (issue 14). The fake model counts a word as a token."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from hotswapd.errors import TextTooLong
from tests.conftest import run_hs
from tests.core.conftest import StartDaemon
from tests.fakebackend import vector
from tests.inproc import fake_config

LONG = " ".join(f"w{i}" for i in range(60))  # 60 words: 62 tokens with the special ones


def config(tmp_path: Path, policy: str) -> str:
    return fake_config(tmp_path, {"v1": {"max_tokens": 24, "long_text": policy}}, extra='[http]\nlisten = "127.0.0.1:0"\n')


@pytest.mark.slow  # runs real processes (hs, a shell): the full suite's depth
def test_truncation_is_counted_in_every_reply(start: StartDaemon, tmp_path: Path) -> None:
    with start(config(tmp_path, "truncate")) as daemon, daemon.client() as client:
        result = client.encode([LONG, "short text", LONG], "m")
        assert (result.truncated, result.chunked) == (2, 0)
        assert client.encode(["short text"], "m").truncated == 0
        done = run_hs("encode", LONG, "short", endpoint=daemon.endpoint, env={"XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]})
        assert json.loads(done.stdout)["truncated"] == 1
        with httpx.Client(base_url=daemon.daemon.http.url) as web:  # type: ignore[union-attr]
            answer = web.post("/v1/embeddings", json={"model": "m", "input": [LONG, "x"]})
            assert answer.headers["x-hotswap-truncated"] == "1" and answer.headers["x-hotswap-chunked"] == "0"
            assert answer.json()["usage"]["prompt_tokens"] == 24 + 3  # what the model read


def test_usage_counts_what_the_model_read_and_says_what_was_cut(start: StartDaemon, tmp_path: Path) -> None:
    """A 62-token text cut to the version's 24 is 24 tokens of usage, not 62 (issue 27, point 8)."""
    with start(config(tmp_path, "truncate")) as daemon, httpx.Client(base_url=daemon.daemon.http.url) as web:  # type: ignore[union-attr]
        answer = web.post("/v1/embeddings", json={"model": "m", "input": [LONG, "x", LONG]})
        assert answer.json()["usage"] == {"prompt_tokens": 24 + 3 + 24, "total_tokens": 24 + 3 + 24}
        assert answer.headers["x-hotswap-tokens-cut"] == str(2 * (62 - 24)) and answer.headers["x-hotswap-truncated"] == "2"
        short = web.post("/v1/embeddings", json={"model": "m", "input": ["two words"]})
        assert short.json()["usage"]["prompt_tokens"] == 4 and short.headers["x-hotswap-tokens-cut"] == "0"
    with start(config(tmp_path, "chunk-mean")) as daemon, httpx.Client(base_url=daemon.daemon.http.url) as web:  # type: ignore[union-attr]
        # Chunked, every token of the text is read (in windows): all of it is counted.
        answer = web.post("/v1/embeddings", json={"model": "m", "input": [LONG]})
        assert answer.json()["usage"]["prompt_tokens"] == 62 and answer.headers["x-hotswap-tokens-cut"] == "0"


def test_error_policy_refuses_naming_the_text(start: StartDaemon, tmp_path: Path) -> None:
    with start(config(tmp_path, "error")) as daemon, daemon.client() as client:
        with pytest.raises(TextTooLong, match=r'text 1 is 62 tokens; this version takes 24 \(long_text = "error"\)'):
            client.encode(["fine", LONG], "m")
        assert client.encode(["fine"], "m").count == 1
        with httpx.Client(base_url=daemon.daemon.http.url) as web:  # type: ignore[union-attr]
            answer = web.post("/v1/embeddings", json={"model": "m", "input": ["fine", LONG]})
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"


def test_chunk_mean_averages_windows_weighted_by_tokens(start: StartDaemon, tmp_path: Path) -> None:
    with start(config(tmp_path, "chunk-mean")) as daemon, daemon.client() as client:
        result = client.encode([LONG, "short text"], "m")
        assert (result.truncated, result.chunked) == (0, 1)
        words = LONG.split()
        window, overlap = 24 - 8, 2  # max_tokens less the special-token margin; 1/8 overlap
        pieces, start_at = [], 0
        while True:
            end = min(start_at + window, len(words))
            pieces.append((" ".join(words[start_at:end]), end - start_at))
            if end == len(words):
                break
            start_at = end - overlap
        weights = np.array([tokens for _, tokens in pieces], dtype=np.float64)
        mean = (np.stack([vector(piece, 1.0, 8) for piece, _ in pieces]) * weights[:, None]).sum(axis=0) / weights.sum()
        np.testing.assert_allclose(result.embeddings[0], mean / np.linalg.norm(mean), rtol=1e-5)
        short = vector("short text", 1.0, 8)
        np.testing.assert_allclose(result.embeddings[1], short / np.linalg.norm(short), rtol=1e-5)
        raw = client.encode([LONG], "m", normalize=False).embeddings[0]
        np.testing.assert_allclose(raw, mean, rtol=1e-5)
