"""An HTTP request whose client has gone frees what it queued; a request may carry its own
deadline (X-Request-Timeout). Through a real socket, against an in-process daemon serving
fake models whose batches a test holds (issue 27, point 2)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import zmq

from hotswapd.wire.protocol import decode_reply, encode_request
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.core.test_http import http_config, serving

# Pieces of two texts: a request of twenty texts is ten batches, one at a time.
SMALL_BATCHES = "max_batch_size = 2\nmax_wait_ms = 0"
TEXTS = [f"text number {i}" for i in range(20)]


def _raw_post(url: str, body: dict[str, object], headers: str = "") -> socket.socket:
    """A POST sent on a plain socket that the test closes whenever it likes (a client that leaves)."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    conn = socket.create_connection((parts.hostname, parts.port))
    conn.sendall(
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )
    return conn


def _wait(condition, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_client_that_leaves_frees_the_work_it_queued(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path, daemon=SMALL_BATCHES)) as (daemon, url):
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        conn = _raw_post(url, {"model": "m", "input": TEXTS})
        assert control.entered.wait(5)  # its first batch runs (and is held); nine are queued
        conn.close()  # the client leaves
        router = daemon.daemon._router  # noqa: SLF001 -- its table of requests a cancel can reach
        # The bridge notices the disconnect and withdraws the request; the batch in hand finishes.
        assert _wait(lambda: router.withdrawals == 1)
        gate.set()
        assert _wait(lambda: router.withdrawable == 0 and daemon.daemon.state.in_flight == 0)
        assert control.encodes == 1, f"{control.encodes} batches ran for a client that had left"
        # The queue is free at once: a ZeroMQ client with a short deadline is served.
        with daemon.client(timeout=5) as client:
            assert client.encode(["after"], "m").embeddings.shape == (1, 8)
        assert daemon.daemon.admission.describe()["queued_texts"] == 0


def test_x_request_timeout_drops_the_work_past_it(start: StartDaemon, tmp_path: Path) -> None:
    with serving(start, http_config(tmp_path, daemon=SMALL_BATCHES)) as (daemon, url), httpx.Client(base_url=url, timeout=30) as web:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        started = time.monotonic()
        answer = web.post("/v1/embeddings", json={"model": "m", "input": TEXTS}, headers={"X-Request-Timeout": "0.5"})
        waited = time.monotonic() - started
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "timeout", answer.text
        assert 0.4 < waited < 5, waited  # the request's own deadline, not the server's 60 s
        assert _wait(lambda: daemon.daemon._router.withdrawals == 1)  # noqa: SLF001 -- the bridge withdrew it at its timeout
        gate.set()
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert control.encodes == 1
        # A malformed value is the caller's error, said in OpenAI's shape.
        for bad in ("soon", "-1", "0", "nan", "inf"):
            refused = web.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers={"X-Request-Timeout": bad})
            assert refused.status_code == 400 and "X-Request-Timeout" in refused.json()["error"]["message"], bad
        assert web.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers={"X-Request-Timeout": "600"}).status_code == 200


def test_the_openai_packages_own_timeout_is_the_deadline(start: StartDaemon, tmp_path: Path) -> None:
    """The openai package sends its read timeout (X-Stainless-Read-Timeout): past it nobody
    reads the answer, so the daemon drops the work then."""
    with serving(start, http_config(tmp_path, daemon=SMALL_BATCHES)) as (daemon, url), httpx.Client(base_url=url, timeout=30) as web:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        answer = web.post("/v1/embeddings", json={"model": "m", "input": TEXTS}, headers={"X-Stainless-Read-Timeout": "0.5"})
        assert answer.status_code == 503
        assert _wait(lambda: daemon.daemon._router.withdrawals == 1)  # noqa: SLF001 -- the bridge withdrew it at its timeout
        gate.set()
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert control.encodes == 1
        # Malformed, it is ignored as any unknown header would be.
        assert web.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers={"X-Stainless-Read-Timeout": "later"}).status_code == 200


def test_cancel_reaches_only_the_senders_own_requests(start: StartDaemon, tmp_path: Path) -> None:
    with start(http_config(tmp_path, daemon=SMALL_BATCHES)) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        context = zmq.Context.instance()
        owner, stranger = context.socket(zmq.DEALER), context.socket(zmq.DEALER)
        try:
            for sock in (owner, stranger):
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(daemon.endpoint)
            owner.send_multipart(encode_request("r1", "encode", model="m", payload=[t.encode() for t in TEXTS]))
            assert control.entered.wait(5)

            def cancel(sock: zmq.Socket[bytes], target: str, rid: str) -> dict[str, object]:
                sock.send_multipart(encode_request(rid, "cancel", options={"id": target}))
                assert sock.poll(5000)
                _, body, _, ok = decode_reply(sock.recv_multipart())
                assert ok, body
                return body

            assert cancel(stranger, "r1", "s1")["withdrawn"] is False  # another client's request: untouched
            assert cancel(owner, "r1", "c1")["withdrawn"] is True
            gate.set()
            assert owner.poll(5000)
            rid, body, _, ok = decode_reply(owner.recv_multipart())
            assert rid == "r1" and not ok and body["code"] == "cancelled", body
            assert control.encodes == 1
            assert cancel(owner, "r1", "c2")["withdrawn"] is False  # answered: nothing left to withdraw
            stranger.send_multipart(encode_request("s2", "cancel", options={"id": 7}))
            assert stranger.poll(5000)
            _, body, _, ok = decode_reply(stranger.recv_multipart())
            assert not ok and body["code"] == "protocol_error"
        finally:
            owner.close()
            stranger.close()


def test_a_withdrawn_request_is_counted_as_cancelled_not_as_a_failure(start: StartDaemon, tmp_path: Path) -> None:
    """Health (which can roll a version back) judges a version by its answers; a client
    leaving says nothing of it. The metrics count it apart."""
    with serving(start, http_config(tmp_path, daemon=SMALL_BATCHES)) as (daemon, url):
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        conn = _raw_post(url, {"model": "m", "input": TEXTS})
        assert control.entered.wait(5)
        conn.close()
        assert _wait(lambda: daemon.daemon._router.withdrawals == 1)  # noqa: SLF001 -- the cancel has reached the request
        gate.set()
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert daemon.daemon.health.snapshot("m", "v1").errors == 0
        with daemon.client() as client:
            metrics = client.metrics()
        assert 'hotswapd_requests_total{model="m",outcome="cancelled",version="v1"} 1.0' in metrics, metrics
        assert 'outcome="error"' not in metrics


def test_a_stop_answers_http_requests_in_flight_within_its_drain(start: StartDaemon, tmp_path: Path) -> None:
    """Point 6: a request still running when the drain ends is answered 503 in OpenAI's
    shape, its queued work is dropped, and the stop takes the drain and a few seconds."""
    with start(http_config(tmp_path, daemon=SMALL_BATCHES), drain_seconds=1.0) as daemon:
        url = daemon.daemon.http.url  # type: ignore[union-attr]
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/v1/embeddings", json={"model": "m", "input": TEXTS}, timeout=60)))
        caller.start()
        assert control.entered.wait(5)
        started = time.monotonic()
        daemon.daemon.request_stop()
        caller.join(15)
        answered_after = time.monotonic() - started
        gate.set()  # the batch on the model (held by the test) ends; the daemon can finish stopping
        assert answers, "no answer to the request in flight"
        answer = answers[0]
        assert answer.status_code == 503 and answer.headers["content-type"] == "application/json", (answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "service_unavailable"
        assert answered_after < 1.0 + 3.0 + 3.0, answered_after  # the drain, the wait for batches on the model, slack
        assert _wait(lambda: not daemon.daemon.inference.running(), 10)
        assert control.encodes == 1, f"{control.encodes} batches ran after the drain gave the request up"


def test_counting_a_withdrawn_requests_tokens_stops_within_a_slice() -> None:
    """Tokenizing 15 MB took seconds that a withdrawal could not stop; counted in slices,
    it stops at the next one (the bench: released 0.3 s after the client left, not 4.3 s)."""
    from hotswapd.backends import Capabilities
    from hotswapd.errors import Cancelled
    from hotswapd.pipeline import long_text
    from hotswapd.pipeline.deadline import Deadline

    calls: list[int] = []
    deadline = Deadline()

    def count(texts: list[str]) -> list[int]:
        calls.append(len(texts))
        deadline.withdraw(Cancelled("the client left"))  # it leaves while the first slice is counted
        return [3] * len(texts)

    texts = ["a text"] * (long_text.COUNT_SLICE * 4)
    with pytest.raises(Cancelled):
        long_text.plan(Capabilities(max_tokens=512, count_tokens=count), texts, [], "truncate", True, deadline.stopped)
    assert calls == [long_text.COUNT_SLICE]
    counted = long_text.plan(Capabilities(max_tokens=512, count_tokens=lambda t: [3] * len(t)), texts, [], "truncate", True, Deadline().stopped)
    assert counted.tokens == 3 * len(texts)


def test_a_request_behind_a_pipelined_one_is_withdrawn_too(start: StartDaemon, tmp_path: Path) -> None:
    """uvicorn tells only a connection's newest request that the client left; the one still
    running (a second was pipelined behind it) must be withdrawn all the same."""
    with serving(start, http_config(tmp_path, daemon=SMALL_BATCHES)) as (daemon, url):
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        # Both requests in one write: uvicorn has read them both when the first's handler
        # starts. (A request pipelined later, while the first runs, makes uvicorn stop reading
        # the connection until the first is answered: its leaving is seen only then.)
        requests = b""
        for texts in (TEXTS, ["second"]):
            body = json.dumps({"model": "m", "input": texts}).encode()
            requests += (b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        parts = urlsplit(url)
        conn = socket.create_connection((parts.hostname, parts.port))
        conn.sendall(requests)
        assert control.entered.wait(5)
        conn.close()
        assert _wait(lambda: daemon.daemon._router.withdrawals == 1)  # noqa: SLF001 -- the cancel has reached the request
        gate.set()
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert control.encodes == 1, f"{control.encodes} batches ran for a client that had left"


def test_a_reused_request_id_is_withdrawn_and_forgotten_apart(start: StartDaemon, tmp_path: Path) -> None:
    with start(http_config(tmp_path, daemon=SMALL_BATCHES)) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        router = daemon.daemon._router  # noqa: SLF001 -- its table of requests a cancel can reach
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.endpoint)
        try:
            for _ in range(2):  # the same id twice, both in flight
                sock.send_multipart(encode_request("same", "encode", model="m", payload=[t.encode() for t in TEXTS]))
            assert control.entered.wait(5)
            assert _wait(lambda: router.withdrawable == 2)
            sock.send_multipart(encode_request("c", "cancel", options={"id": "same"}))
            assert sock.poll(5000)
            rid, body, _, ok = decode_reply(sock.recv_multipart())
            assert (rid, ok, body["withdrawn"]) == ("c", True, True)  # both withdrawn before the batch in hand ends
            gate.set()
            answers = []
            while len(answers) < 2 and sock.poll(5000):
                answers.append(decode_reply(sock.recv_multipart()))
            assert [(rid, ok, body["code"]) for rid, body, _, ok in answers] == [("same", False, "cancelled")] * 2
            assert router.withdrawable == 0 and control.encodes == 1
        finally:
            sock.close()


def test_a_zeromq_client_that_closes_withdraws_what_it_was_waiting_for(start: StartDaemon, tmp_path: Path) -> None:
    """`hs encode` interrupted (Ctrl-C closes its client): its queued work is dropped at
    once, not at its deadline."""
    with start(http_config(tmp_path, daemon=SMALL_BATCHES)) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        client = daemon.client()
        client._send_encode(TEXTS, "m", {})  # noqa: SLF001 -- sent, its answer never read
        assert control.entered.wait(5)
        client.close()
        assert _wait(lambda: daemon.daemon._router.withdrawals == 1)  # noqa: SLF001 -- the cancel reached it
        gate.set()
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert control.encodes == 1


def test_a_stream_broken_off_withdraws_its_chunks_in_flight(start: StartDaemon, tmp_path: Path) -> None:
    with start(http_config(tmp_path, daemon=SMALL_BATCHES)) as daemon, daemon.client() as client:
        control = fakebackend.CONTROLS["v1"]
        control.delay = 0.2  # a batch of 2 texts: chunks of 4 are 0.4 s each, one after another
        stream = client.encode_stream(([f"chunk {c} text {i}" for i in range(4)] for c in range(10)), "m", window=4, sort_window=0)
        next(stream)  # the first chunk, alone: it picks the version the others are pinned to
        next(stream)  # the second, of a window of four in flight
        stream.close()  # the caller breaks off: three chunks are still in flight, queued
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert daemon.daemon._router.withdrawals == 3  # noqa: SLF001 -- what it had in flight was withdrawn
        assert control.encodes <= 5  # two chunks of two batches, and at most the one in hand after


@pytest.mark.slow  # a real `hs` process, interrupted
def test_ctrl_c_on_hs_encode_withdraws_its_requests(start: StartDaemon, tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.conftest import HS, daemon_env

    with start(http_config(tmp_path, daemon=SMALL_BATCHES)) as daemon:
        control = fakebackend.CONTROLS["v1"]
        gate = threading.Event()
        control.gate = gate
        source = tmp_path / "docs.txt"
        source.write_text("".join(f"line {i}\n" for i in range(200)))
        env = daemon_env(HOTSWAPD_SOCKET=daemon.endpoint, HOTSWAPD_NO_AUTOSTART="1")
        process = subprocess.Popen([str(HS), "encode", "-i", str(source), "-f", "jsonl", "-m", "m@v1"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert control.entered.wait(30)  # its first chunk is on the model (held); the others queued
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=15)
        assert process.returncode == 130, errors
        assert _wait(lambda: daemon.daemon._router.withdrawals >= 1)  # noqa: SLF001 -- the cancels reached them
        gate.set()
        assert _wait(lambda: daemon.daemon.state.in_flight == 0)
        assert control.encodes < 100  # 200 texts are 100 batches of 2: most were never run
