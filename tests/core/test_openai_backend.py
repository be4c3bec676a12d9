"""The `openai` backend against a local HTTP server speaking the OpenAI embeddings protocol,
which can fail, stall, garble or change its model on demand (issue 14)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from hotswapd.errors import InferenceError, ModelLoadError
from tests.core.conftest import StartDaemon

DIM = 6


def remote_vector(text: str, salt: str) -> np.ndarray:
    seed = hashlib.sha256(f"{salt}|{text}".encode()).digest()
    return np.frombuffer(seed, dtype=np.uint8)[:DIM].astype(np.float32) + 1.0


class Remote:
    """What the server does next: mode 'ok', '500', 'stall', 'trickle', 'headtrickle', 'huge', 'badjson', 'short',
    'nan', 'deep500', 'boolindex'; salt = the model."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.salt = "model-a"
        self.calls = 0
        self.failures_left = 0  # with mode 'ok': fail this many calls with a 503 first
        self.seen_auth: list[str | None] = []


@pytest.fixture()
def remote() -> Iterator[tuple[Remote, str]]:
    state = Remote()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 -- the stdlib's name
            state.calls += 1
            state.seen_auth.append(self.headers.get("authorization"))
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if state.mode == "500" or state.failures_left > 0:
                state.failures_left = max(0, state.failures_left - 1)
                return self._send(503 if state.mode == "ok" else 500, b'{"error": {"message": "the remote is down"}}')
            if state.mode == "stall":
                threading.Event().wait(2)
            if state.mode == "trickle":  # each read in time, the whole answer never
                return self._trickle()
            if state.mode == "headtrickle":  # the same, before the head is even complete
                return self._trickle_head()
            if state.mode == "huge":
                return self._send(200, b" " * (3 * 2**20) + b"{}")
            if state.mode == "badjson":
                return self._send(200, b"{not json")
            if state.mode == "deep500":
                return self._send(500, b"[" * 100_000)
            texts = body["input"]
            data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(remote_vector(t, state.salt).tobytes()).decode()} for i, t in enumerate(texts)]
            if state.mode == "short":
                data = data[:-1]
            if state.mode == "nan":
                data[0]["embedding"] = [float("nan")] * DIM
            if state.mode == "boolindex":
                data[0]["index"] = True
            self._send(200, json.dumps({"object": "list", "data": data, "model": body["model"]}).encode())

        def _trickle(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "100")
            self.end_headers()
            for _ in range(30):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                threading.Event().wait(0.1)

        def _trickle_head(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(40):
                try:
                    self.wfile.write(b"X-Slow: 1\r\n")
                    self.wfile.flush()
                except OSError:
                    return
                threading.Event().wait(0.1)
            self.close_connection = True

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def config(url: str, **extra: object) -> str:
    options = {"backend": "openai", "source": "remote:", "endpoint": url, "remote_model": "model-a", "timeout_seconds": 0.5, "retries": 2, **extra}
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())
    return f'[models.r]\nactive = "v1"\n[models.r.versions.v1]\n{lines}'



def test_vectors_come_from_the_remote_in_order(start: StartDaemon, remote: tuple[Remote, str], monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = remote
    monkeypatch.setenv("REMOTE_KEY", "secret-value")
    with start(config(url, api_key_env="REMOTE_KEY", max_batch=3)) as daemon, daemon.client() as client:
        texts = [f"text {i}" for i in range(8)]
        client.preload("r")  # the load's probe is one call
        before = state.calls
        result = client.encode(texts, "r", normalize=False)
        expected = np.stack([remote_vector(t, "model-a") for t in texts])
        np.testing.assert_array_equal(result.embeddings, expected)
        assert state.calls - before == 3  # max_batch texts per call
        assert set(state.seen_auth) == {"Bearer secret-value"}
        assert result.version == "v1" and client.preload("r")["device"] == "remote"


def test_remote_failures_are_typed_errors_and_the_daemon_serves_on(start: StartDaemon, remote: tuple[Remote, str], monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = remote
    monkeypatch.setattr("hotswapd.backends.openai_remote.MAX_ANSWER_BYTES", 2**20)
    with start(config(url, retries=1)) as daemon, daemon.client() as client:
        state.failures_left = 1  # a 503, then an answer: the retry absorbs it
        assert client.encode(["retried"], "r").count == 1
        for mode, says in (("500", "answered HTTP 500: the remote is down"), ("stall", "unreachable after 2 attempts"),
                           ("trickle", "more than 0.5 s in all"), ("headtrickle", "more than 0.5 s in all"), ("huge", "more than 1048576 bytes"), ("badjson", "invalid JSON"), ("short", "one embedding per text"),
                           ("nan", "NaN or infinite"), ("deep500", "answered HTTP 500"), ("boolindex", "bad or repeated index")):
            state.mode = mode
            with pytest.raises(InferenceError, match=says):
                client.encode([f"fails {mode}"], "r", no_cache=True)
            state.mode = "ok"
            assert client.encode([f"fine after {mode}"], "r").count == 1
        assert client.ping()["pong"]


def test_a_silent_remote_upgrade_changes_the_fingerprint(start: StartDaemon, remote: tuple[Remote, str]) -> None:
    state, url = remote
    with start(config(url, recheck_seconds=0.2)) as daemon, daemon.client() as client:
        first = client.encode(["same text"], "r")
        state.salt = "model-b"  # the endpoint now runs another model under the same name
        threading.Event().wait(0.3)
        second = client.encode(["same text"], "r")
        assert second.fingerprint != first.fingerprint
        assert not np.array_equal(second.embeddings, first.embeddings)  # not served from the cache


def test_a_load_against_a_dead_endpoint_fails_clearly(start: StartDaemon, tmp_path: Path) -> None:
    with start(config("http://127.0.0.1:9/v1", retries=0)) as daemon, daemon.client() as client:
        with pytest.raises(ModelLoadError, match="openai endpoint check failed: http://127.0.0.1:9/v1/embeddings unreachable"):
            client.preload("r")
