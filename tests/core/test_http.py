"""The OpenAI-compatible HTTP endpoint, driven by the real `openai` package and by httpx,
against an in-process daemon serving fake models (issue 14)."""

from __future__ import annotations

import base64
import json
import socket
import time
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from hotswapd.errors import ConfigError
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import InprocDaemon, fake_config

KEY = "k" * 32


def http_config(tmp_path: Path, extra_http: str = "", daemon: str = "", **versions: dict[str, object]) -> str:
    extra = f'[daemon]\n{daemon}\n[http]\nlisten = "127.0.0.1:0"\n{extra_http}\n'
    return fake_config(tmp_path, versions or {"v1": {}, "v2": {"scale": 2.0}}, extra=extra)


@contextmanager
def serving(start: StartDaemon, config: str) -> Iterator[tuple[InprocDaemon, str]]:
    with start(config) as daemon:
        assert daemon.daemon.http is not None
        yield daemon, daemon.daemon.http.url


def test_openai_package_gets_what_hs_gets(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path)) as (daemon, url), daemon.client() as client:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        texts = ["hello world", "a somewhat longer sentence about embeddings"]
        expected = client.encode(texts, "m").embeddings
        # No encoding_format: the openai package asks for base64 and decodes it itself.
        default = api.embeddings.create(model="m", input=texts)
        assert default.model == "m@v1"
        got = np.array([item.embedding for item in default.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert [item.index for item in default.data] == [0, 1]
        assert default.usage.prompt_tokens == default.usage.total_tokens == sum(len(t.split()) + 2 for t in texts)
        as_float = api.embeddings.create(model="m", input=texts, encoding_format="float")
        np.testing.assert_allclose(np.array([item.embedding for item in as_float.data]), expected, rtol=1e-6, atol=1e-7)
        single = api.embeddings.create(model="m@v2", input="hello world")
        assert single.model == "m@v2" and len(single.data) == 1
        np.testing.assert_allclose(single.data[0].embedding, client.encode(["hello world"], "m@v2").embeddings[0], rtol=1e-6)
        raw = api.embeddings.with_raw_response.create(model="m", input="x")
        assert raw.headers["x-hotswap-version"] == "v1" and raw.headers["x-hotswap-fingerprint"] == client.encode(["x"], "m").fingerprint


def test_dimensions_cut_and_renormalise(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path)) as (daemon, url), daemon.client() as client:
        full = client.encode(["matryoshka"], "m").embeddings[0]
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        cut = np.array(api.embeddings.create(model="m", input="matryoshka", dimensions=4, encoding_format="float").data[0].embedding)
        np.testing.assert_allclose(cut, full[:4] / np.linalg.norm(full[:4]), rtol=1e-5)
        with pytest.raises(openai.BadRequestError, match="dimensions"):
            api.embeddings.create(model="m", input="x", dimensions=9)


def test_a_canary_splits_http_traffic_and_a_sticky_header_holds(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path)) as (daemon, url), daemon.client() as client, httpx.Client(base_url=url) as web:
        client.switch("m", "v2", "canary", share=50, sticky=True)
        seen = [web.post("/v1/embeddings", json={"model": "m", "input": f"text {i}"}).headers["x-hotswap-version"] for i in range(200)]
        assert 60 <= seen.count("v2") <= 140, seen.count("v2")
        sticky = {web.post("/v1/embeddings", json={"model": "m", "input": "t"}, headers={"X-Hotswap-Key": "user-7"}).headers["x-hotswap-version"] for _ in range(20)}
        assert len(sticky) == 1


BAD_REQUESTS: list[tuple[dict[str, object], int, str | None]] = [
    ({"model": "m", "input": []}, 400, "non-empty"),
    ({"model": "m", "input": ""}, 400, "empty string"),
    ({"model": "m", "input": ["ok", 3]}, 400, "'input'[1] is a int"),
    ({"model": "m", "input": [101, 2023]}, 400, "token ids is not supported"),
    ({"model": "m", "input": [[101, 2023]]}, 400, "token ids is not supported"),
    ({"model": "m", "input": ["x"] * 60}, 400, "max_batch_texts"),
    ({"model": "m", "input": "y" * 3000}, 400, "max_text_bytes"),
    ({"model": "m", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "m", "input": "x", "dimensions": 0}, 400, "dimensions"),
    ({"model": 5, "input": "x"}, 400, "'model'"),
    ({"model": "m" * 100_000, "input": "x"}, 400, "'model'"),  # once a 60 s hang: the header passed the wire's limit
    ({"model": "@v1", "input": "x"}, 400, "'model'"),
    ({"model": "m", "input": "x", "encoding_format": 0}, 400, "encoding_format"),
    ({"model": "nope", "input": "x"}, 404, "unknown model"),
    ({"model": "m@v9", "input": "x"}, 404, "v9"),
]


def test_bad_requests_get_openai_errors(start: StartDaemon, tmp_path: Path) -> None:
    config = http_config(tmp_path, daemon="max_batch_texts = 50\nmax_text_bytes = 2000")
    with serving(start, config) as (_, url), httpx.Client(base_url=url) as web:
        for body, status, says in BAD_REQUESTS:
            answer = web.post("/v1/embeddings", json=body)
            assert answer.status_code == status, (body, answer.text)
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
            assert says is None or says in error["message"], (body, error)
        assert web.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers={"X-Hotswap-Key": "k" * 70_000}).status_code == 400
        assert web.post("/v1/embeddings", json={"model": "m", "input": "still serving"}).status_code == 200


def test_malformed_and_oversized_bodies(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path, extra_http="max_body_mb = 0.01")) as (_, url), httpx.Client(base_url=url) as web:
        for raw in (b"{not json", b"[1, 2]", b'{"input": NaN}', b"\xff\xfe"):
            answer = web.post("/v1/embeddings", content=raw, headers={"content-type": "application/json"})
            assert answer.status_code == 400, (raw, answer.text)
        big = web.post("/v1/embeddings", json={"model": "m", "input": ["z" * 1000] * 20})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
            yield b'{"model": "m", "input": ["'
            for _ in range(100):
                yield b"z" * 1000
            yield b'"]}'

        streamed = web.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


def test_overload_is_429_with_retry_after(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path, extra_http="max_pending = 2")) as (daemon, url):
        gate = threading.Event()
        fakebackend.CONTROLS["v1"].gate = gate
        results: list[int] = []

        def call() -> None:
            with httpx.Client(base_url=url, timeout=30) as web:
                results.append(web.post("/v1/embeddings", json={"model": "m", "input": "slow"}).status_code)

        waiting = [threading.Thread(target=call) for _ in range(2)]
        for thread in waiting:
            thread.start()
        assert fakebackend.CONTROLS["v1"].entered.wait(5)
        with daemon.client() as client:  # both calls in the daemon: the bridge holds 2 (a loaded machine is slow to send the second)
            deadline = time.monotonic() + 10
            while client.status()["in_flight"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        with httpx.Client(base_url=url) as web:
            answer = web.post("/v1/embeddings", json={"model": "m", "input": "one more"})
            assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"]["code"] == "rate_limit_exceeded"
        gate.set()
        for thread in waiting:
            thread.join(10)
        assert results == [200, 200]


def test_models_health_and_metrics(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path)) as (daemon, url), httpx.Client(base_url=url) as web:
        web.post("/v1/embeddings", json={"model": "m", "input": "counted"})
        listed = web.get("/v1/models").json()
        assert listed["object"] == "list" and {"m", "m@v1"} <= {item["id"] for item in listed["data"]}
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert "m" in [model.id for model in api.models.list()]
        assert web.get("/health").json() == {"status": "ready"}
        metrics = web.get("/metrics").text
        assert 'hotswapd_requests_total{model="m",outcome="ok",version="v1"}' in metrics
        with daemon.client() as client:
            assert client.status()["http"] == url
        # Every accepted connection inherits it: without it a kept-alive connection waited
        # ~40 ms per request (Nagle against delayed ACKs).
        import socket

        assert daemon.daemon.http._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        daemon.daemon.state.phase = "stopping"
        assert web.get("/health").status_code == 503


def _closed_within(sock: "socket.socket", seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_silent_and_trickling_clients_are_cut_off(start: StartDaemon, tmp_path: Path) -> None:
    """Slowloris: a connection that sends nothing, or its head a piece at a time, or a body
    that never completes, is closed or answered 408 after read_timeout_seconds; the endpoint
    keeps answering others, and a kept-alive client between requests is not cut mid-request."""
    config = http_config(tmp_path, "read_timeout_seconds = 0.5\n")
    with serving(start, config) as (daemon, url), httpx.Client(base_url=url) as web, ExitStack() as sockets:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        silent = sockets.enter_context(socket.create_connection((host, int(port))))
        half_head = sockets.enter_context(socket.create_connection((host, int(port))))
        half_head.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        half_body = sockets.enter_context(socket.create_connection((host, int(port))))
        half_body.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"in")
        assert web.post("/v1/embeddings", json={"model": "m", "input": "still served"}).status_code == 200
        assert _closed_within(silent, 5) and _closed_within(half_head, 5)
        half_body.settimeout(5)
        assert b"408" in half_body.recv(65536).split(b"\r\n")[0]
        for _ in range(3):  # kept alive across pauses shorter than the keep-alive
            assert web.post("/v1/embeddings", json={"model": "m", "input": "again"}).status_code == 200
            time.sleep(0.3)


def test_connections_past_the_bound_are_closed_on_accept(start: StartDaemon, tmp_path: Path) -> None:
    config = http_config(tmp_path, "max_connections = 3\nread_timeout_seconds = 30\n")
    with serving(start, config) as (daemon, url), ExitStack() as sockets:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        held = [sockets.enter_context(socket.create_connection((host, int(port)))) for _ in range(3)]
        extra = sockets.enter_context(socket.create_connection((host, int(port))))
        assert _closed_within(extra, 5)
        held.pop().close()
        time.sleep(0.2)
        with httpx.Client(base_url=url) as web:
            assert web.post("/v1/embeddings", json={"model": "m", "input": "a free slot"}).status_code == 200


def test_clients_that_do_not_read_lose_their_slot(start: StartDaemon, tmp_path: Path) -> None:
    """A client that sends requests and never reads the answers must not hold its buffer
    and its connection slot: after read_timeout_seconds without reading, it is dropped."""
    config = http_config(tmp_path, "max_connections = 2\nread_timeout_seconds = 0.5\n", v1={"dim": 1024})
    body = json.dumps({"model": "m", "input": [f"t{i}" for i in range(1500)], "encoding_format": "float"}).encode()  # ~30 MB answers
    request = b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with serving(start, config) as (daemon, url), ExitStack() as sockets:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sockets.enter_context(sock).connect((host, int(port)))
            sock.sendall(request)  # and the answer never read
        time.sleep(3)
        assert len(daemon.daemon.http._server.server_state.connections) == 0
        with httpx.Client(base_url=url) as web:
            assert web.post("/v1/embeddings", json={"model": "m", "input": "a slot again"}).status_code == 200


def test_a_huge_head_is_431_and_a_slow_honest_upload_is_served(start: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = http_config(tmp_path, "read_timeout_seconds = 0.5\n")
    with serving(start, config) as (daemon, url), ExitStack() as sockets:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        flood = sockets.enter_context(socket.create_connection((host, int(port))))
        flood.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        flood.settimeout(5)
        assert flood.recv(65536).startswith(b"HTTP/1.1 431")
        # 160 KB at ~80 KB/s: past read_timeout_seconds, but arriving steadily.
        body = json.dumps({"model": "m", "input": ["slow but steady " + "x" * 150_000]}).encode()
        slow = sockets.enter_context(socket.create_connection((host, int(port))))
        slow.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start_at in range(0, len(body), 8000):
            slow.sendall(body[start_at : start_at + 8000])
            time.sleep(0.1)
        slow.settimeout(10)
        assert slow.recv(65536).startswith(b"HTTP/1.1 200")
        # A client that leaves mid-body is no error worth a traceback in the log.
        gone = socket.create_connection((host, int(port)))
        gone.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\"")
        time.sleep(0.1)
        gone.close()
        too_big = sockets.enter_context(socket.create_connection((host, int(port))))
        too_big.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{" % (64 * 2**20))
        too_big.settimeout(5)
        head = too_big.recv(65536).split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 413") and b"connection: close" in head
        time.sleep(0.3)
        assert not [r for r in caplog.records if r.levelname == "ERROR" and "embeddings failed" in r.getMessage()]


def test_a_web_page_cannot_use_the_endpoint(start: StartDaemon, tmp_path: Path) -> None:
    """Before (0df0f2a): with no keys (the loopback default), a POST with Content-Type
    text/plain, any Host and any Origin was answered 200: any site the user visited could
    make the daemon compute, and a DNS-rebinding page could read /v1/models and /metrics."""
    with serving(start, http_config(tmp_path)) as (daemon, url), httpx.Client(base_url=url, timeout=10) as web:
        body = json.dumps({"model": "m", "input": "hello"})
        simple = web.post("/v1/embeddings", content=body, headers={"content-type": "text/plain"})  # what a page's form or fetch sends unasked
        assert simple.status_code == 415 and simple.json()["error"]["code"] == "unsupported_media_type"
        for path in ("/v1/models", "/metrics", "/health"):
            rebound = web.get(path, headers={"host": "attacker.example:8080"})
            assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "misdirected_request", path
        page = web.post("/v1/embeddings", json={"model": "m", "input": "hello"}, headers={"origin": "https://attacker.example"})
        assert page.status_code == 403 and page.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in page.headers
        # What is not a browser still works: the loopback names, JSON, no Origin.
        for host in ("localhost", "127.0.0.1", f"localhost:{url.rsplit(':', 1)[1]}"):
            assert web.post("/v1/embeddings", json={"model": "m", "input": "hello"}, headers={"host": host}).status_code == 200, host
        assert web.post("/v1/embeddings", content=body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_cors_origins_lets_the_named_pages_in(start: StartDaemon, tmp_path: Path) -> None:
    app = "https://app.example.com"
    with serving(start, http_config(tmp_path, f'cors_origins = ["{app}"]')) as (daemon, url), httpx.Client(base_url=url, timeout=10) as web:
        preflight = web.options(
            "/v1/embeddings", headers={"origin": app, "access-control-request-method": "POST", "access-control-request-headers": "content-type"}
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == app
        answer = web.post("/v1/embeddings", json={"model": "m", "input": "hello"}, headers={"origin": app})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == app
        assert "x-hotswap-version" in answer.headers["access-control-expose-headers"].lower()
        other = web.post("/v1/embeddings", json={"model": "m", "input": "hello"}, headers={"origin": "https://elsewhere.example"})
        assert other.status_code == 403


def test_browser_settings_are_checked(tmp_path: Path) -> None:
    import tomllib

    from hotswapd.config.schema import parse_config

    for origin in ("app.example.com", "ftp://x", "https://x/path"):
        with pytest.raises(ConfigError, match="an origin is SCHEME://HOST"):
            parse_config(tomllib.loads(f'[http]\nlisten = "127.0.0.1:0"\ncors_origins = ["{origin}"]\n'))


def test_every_http_error_is_in_openais_shape(start: StartDaemon, tmp_path: Path) -> None:
    """Before: an unknown route (404) and a wrong method (405) were plain text, and a trailing
    slash got a 307 redirect."""
    with serving(start, http_config(tmp_path)) as (daemon, url), httpx.Client(base_url=url, timeout=10) as web:
        for method, path, status in (("GET", "/v2/nothing", 404), ("POST", "/v1/embeddings/", 404), ("GET", "/v1/embeddings", 405), ("DELETE", "/v1/models", 405)):
            answer = web.request(method, path, json={"model": "m", "input": "x"} if method == "POST" else None)
            assert answer.status_code == status, (method, path, answer.status_code)
            assert answer.headers["content-type"] == "application/json"
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["code"] in ("not_found", "method_not_allowed")
        assert "POST" in web.get("/v1/embeddings").headers["allow"]
        # A request the HTTP parser refuses (uvicorn answers those itself, in plain text).
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for raw in (b"GARBAGE\r\n\r\n", b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"):
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                conn.sendall(raw)
                reply = b""
                while chunk := conn.recv(65536):
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower(), reply
            assert json.loads(body)["error"]["code"] == "bad_request"


