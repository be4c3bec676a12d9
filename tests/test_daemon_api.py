"""The real daemon, driven through the real client: ops, and bad input of every kind."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zmq

from hotswapd import Client
from hotswapd.errors import (
    BatchTooLarge,
    EmptyRequest,
    InvalidText,
    ProtocolError,
    TextTooLong,
    UnknownModel,
    UnknownOp,
    UnsupportedVersion,
)
from tests.conftest import MAX_BATCH_TEXTS, MAX_TEXT_BYTES

# A real daemon process (torch imported at start): the slow depth.
pytestmark = pytest.mark.slow


def test_encode_one_text(client: Client) -> None:
    result = client.encode(["hello world"])
    assert (result.model, result.version, result.dim, result.count) == ("minilm", "v1", 384, 1)
    vectors = result.embeddings
    assert vectors.dtype == np.float32 and vectors.shape == (1, 384)
    assert abs(np.linalg.norm(vectors[0]) - 1.0) < 1e-5


def test_embeddings_view_the_reply_frame_without_copying(client: Client) -> None:
    result = client.encode(["zero copy"], model="tiny")
    vectors = result.embeddings
    assert not vectors.flags.owndata and not vectors.flags.writeable
    assert np.shares_memory(vectors, np.frombuffer(result.buffer, dtype="<f4"))


def test_encode_many_texts_keeps_order(client: Client) -> None:
    texts = [f"sentence number {i}" for i in range(50)]
    batch = client.encode(texts, model="tiny").embeddings
    singles = np.vstack([client.encode([t], model="tiny").embeddings for t in texts[:5]])
    np.testing.assert_allclose(batch[:5], singles, atol=1e-5)
    assert len({v.tobytes() for v in batch}) == 50


def test_no_normalize_option(client: Client) -> None:
    raw = client.encode(["a longer sentence to embed"], model="tiny", normalize=False).embeddings[0]
    unit = client.encode(["a longer sentence to embed"], model="tiny").embeddings[0]
    assert abs(np.linalg.norm(unit) - 1) < 1e-5
    np.testing.assert_allclose(raw / np.linalg.norm(raw), unit, atol=1e-5)


def test_models_preload_evict_status(client: Client) -> None:
    rows = {row["name"]: row for row in client.models()}
    assert set(rows) == {"minilm", "tiny"}
    assert rows["minilm"]["default"] and rows["minilm"]["backend"] == "sentence-transformers"

    assert client.evict("tiny") == {"model": "tiny", "evicted": ["v1"]}
    assert client.evict("tiny")["evicted"] == []
    assert not {row["name"]: row for row in client.models()}["tiny"]["loaded"]
    assert "tiny@v1" not in client.status()["loaded"]

    loaded = client.preload("tiny")
    assert loaded["model"] == "tiny" and loaded["dimension"] == 32 and loaded["load_seconds"] > 0
    status = client.status()
    assert "tiny@v1" in status["loaded"] and status["phase"] == "ready" and status["pid"] > 0


def test_evicted_model_reloads_on_next_use(client: Client) -> None:
    before = client.encode(["reload me"], model="tiny").embeddings.copy()
    client.evict("tiny")
    after = client.encode(["reload me"], model="tiny").embeddings
    np.testing.assert_allclose(before, after, atol=1e-6)


@pytest.mark.parametrize(
    ("texts", "model", "error", "fragment"),
    [
        ([], None, EmptyRequest, "at least one text"),
        (["x"], "nope", UnknownModel, "configured: minilm, tiny"),
        ([b"ok", b"\xff\xfebad"], "tiny", InvalidText, "text 1 is not valid UTF-8"),
        (["x" * (1024 * 1024)], "tiny", TextTooLong, f"limit is {MAX_TEXT_BYTES}"),
        (["x"] * (MAX_BATCH_TEXTS + 1), "tiny", BatchTooLarge, f"limit is {MAX_BATCH_TEXTS}"),
    ],
    ids=["empty", "unknown-model", "non-utf8", "1MB-text", "batch-over-limit"],
)
def test_bad_encode_requests_get_typed_errors(client: Client, texts: list, model: str | None, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        client.encode(texts, model=model)
    assert client.ping()["pong"] is True
    assert client.encode(["still serving"], model="tiny").count == 1


def raw_exchange(endpoint: str, frames: list[bytes]) -> dict:
    """Send frames as they are, bypassing the client's encoder; return the reply header."""
    context = zmq.Context.instance()
    with context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(frames)
        assert sock.poll(10_000), "daemon did not answer a malformed request"
        return json.loads(sock.recv_multipart()[0])


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"\x00\x01not json"], ProtocolError.code),
        ([b"[1, 2, 3]"], ProtocolError.code),
        ([b'{"v": 1, "op": "ping"}'], ProtocolError.code),
        ([b'{"v": 99, "id": "a", "op": "ping"}'], UnsupportedVersion.code),
        ([b'{"v": 1, "id": "a", "op": "fly"}'], UnknownOp.code),
        ([b'{"v": 1, "id": "a", "op": "ping", "extra": 1}'], ProtocolError.code),
        ([b'{"v": 1, "id": "a", "op": "encode", "options": []}', b"x"], ProtocolError.code),
        ([b'{"v": 1, "id": "a", "op": "encode", "options": {"normalize": "yes"}}', b"x"], ProtocolError.code),
        ([b'{"v": 1, "id": "a", "op": "encode", "options": {"colour": 1}}', b"x"], ProtocolError.code),
        ([b'{"v": 1, "id": "a", "op": "encode", "model": 7}', b"x"], ProtocolError.code),
        ([b"{" * 70_000], ProtocolError.code),
    ],
    ids=["garbage", "array", "no-id", "version", "unknown-op", "extra-field", "options-type",
         "option-value", "unknown-option", "model-type", "huge-header"],
)
def test_malformed_frames_get_typed_errors(shared_daemon, client: Client, frames: list[bytes], code: str) -> None:
    reply = raw_exchange(shared_daemon.endpoint, frames)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert client.ping()["pong"] is True


def test_error_reply_carries_the_request_id_when_it_can(shared_daemon) -> None:
    reply = raw_exchange(shared_daemon.endpoint, [b'{"v": 1, "id": "abc", "op": "fly"}'])
    assert reply["id"] == "abc"


def test_ping_and_status_answer_while_a_big_batch_runs(shared_daemon) -> None:
    texts = [f"a fairly long sentence about the weather in place number {i}" for i in range(400)]
    done = threading.Event()
    answered_during_batch: list[float] = []

    def big_batch() -> None:
        with shared_daemon.client() as own:
            own.encode(texts, model="minilm")
        done.set()

    worker = threading.Thread(target=big_batch)
    worker.start()
    with shared_daemon.client(timeout=2.0) as prober:
        while not done.is_set():
            status = prober.status()
            if status["in_flight"] >= 1:
                prober.ping()
                answered_during_batch.append(status["in_flight"])
    worker.join()
    assert answered_during_batch, "the batch finished before any probe saw it in flight"
