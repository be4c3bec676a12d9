"""The Python client: what ``hs`` uses, and what scripts and batch jobs use.

A DEALER socket talks to the daemon's ROUTER. Each request carries an id; replies are
matched by id against a monotonic deadline, so a late reply to an abandoned request is
recognised and dropped rather than mistaken for the answer to the next one. Importing
this module costs ZeroMQ and nothing heavier (numpy only for :attr:`EncodeResult.embeddings`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import zmq

from hotswapd.errors import (
    Busy,
    DaemonDied,
    DaemonError,
    DaemonNotRunning,
    DaemonTimeout,
    ProtocolError,
    RequestError,
    error_from_wire,
)
from hotswapd.host.lockfile import holder_pid
from hotswapd.host.paths import ipc_path, lock_path, resolve_endpoint
from hotswapd.wire.protocol import Op, decode_reply, encode_cancel, encode_request
from hotswapd.client.pace import Pace
from hotswapd.client.request_parts import as_bytes, checked_seconds, in_input_terms, options_of, paced
from hotswapd.client.stream_order import SORT_WINDOW, sorted_stream
from hotswapd.wire.trace_context import current_traceparent
from hotswapd.client.encode_result import EncodeResult

DEFAULT_TIMEOUT = 60.0
# While waiting for a reply, how often to check that the daemon is still alive (its lock
# file is held while it lives; the kernel drops it the moment it dies, even on kill -9).
LIVENESS_SECONDS = 0.5
WITHDRAWABLE_OPS = frozenset({"encode", "search", "rerank"})  # what the daemon's cancel can reach
CANCEL_LINGER_MS = 200  # how long a close may wait for its withdrawals to go out
# A socket file that vanished under a live daemon is re-created by it within a second.
SOCKET_REAPPEAR_SECONDS = 2.0
BUSY_RETRIES = 50  # a stream job backs off this many times on one chunk before it gives up
Text = str | bytes
_Decoded = tuple[dict[str, Any], list[memoryview], bool]  # result-or-error, payload, ok


class Client:
    """A connection to hotswapd. Not thread-safe: use one client per thread."""

    def __init__(self, socket: str | None = None, timeout: float = DEFAULT_TIMEOUT, *, context: zmq.Context[Any] | None = None) -> None:
        self.endpoint = resolve_endpoint(socket)
        self.timeout = checked_seconds(timeout)
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._counter = 0
        self._prefix = f"{os.getpid():x}-{id(self) & 0xFFFF:x}-"
        self._outstanding: dict[str, str] = {}  # id -> op
        self._early: dict[str, _Decoded] = {}  # replies that came before the one awaited

    # -- plumbing -----------------------------------------------------------------------
    def _connect(self) -> zmq.Socket[Any]:
        if self._socket is None:
            self.check_daemon()
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.endpoint.startswith("tcp://"):
                from hotswapd.host.curve_keys import client_keys  # TCP is CURVE-secured, always

                sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = client_keys()
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def check_daemon(self) -> None:
        """Raise DaemonNotRunning at once when no daemon can be serving this endpoint."""
        path = ipc_path(self.endpoint)
        if path is None:
            return
        pid = holder_pid(lock_path(self.endpoint))
        if pid is None:
            stale = " (stale socket file)" if path.exists() else ""
            raise DaemonNotRunning(f"no hotswapd is running on {self.endpoint}{stale}; start one with `hs daemon start`")
        if not path.exists():
            # A live daemon holds the lock but its socket file is gone (deleted by a tmp
            # cleaner or a user); the daemon binds it again within a second.
            deadline = time.monotonic() + SOCKET_REAPPEAR_SECONDS
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not path.exists():
                who = f"pid {pid}" if pid > 0 else "a process"
                raise DaemonError(
                    f"hotswapd ({who}) holds {self.endpoint} but its socket file {path} is missing and was not "
                    "re-created; restart it (hs daemon stop, then hs daemon start)"
                )

    def send(self, op: Op, *, model: str | None = None, options: dict[str, Any] | None = None, payload: list[bytes] | None = None) -> str:
        """Send a request without waiting; returns its id for :meth:`receive`."""
        sock = self._connect()
        self._counter += 1
        request_id = f"{self._prefix}{self._counter:x}"
        sock.send_multipart(encode_request(request_id, op, model=model, options=options, payload=payload), copy=False)
        self._outstanding[request_id] = op
        return request_id

    def receive(self, request_id: str, timeout: float | None = None) -> tuple[dict[str, Any], list[memoryview]]:
        """Wait for the reply to ``request_id``; raise its typed error if it is one."""
        reply = self._early.pop(request_id, None) or self._await(request_id, timeout)
        self._outstanding.pop(request_id, None)
        body, payload, ok = reply
        if not ok:
            raise error_from_wire(body["code"], body["message"], body.get("retry_after"), body.get("index"))
        return body, payload

    def _await(self, request_id: str, timeout: float | None) -> _Decoded:
        sock = self._connect()
        wait = self.timeout if timeout is None else checked_seconds(timeout)
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(int(min(remaining, LIVENESS_SECONDS) * 1000) + 1, zmq.POLLIN):
                if time.monotonic() >= deadline:
                    raise self._timeout_error(request_id, wait)
                self._check_alive(request_id)
                continue
            frames = sock.recv_multipart(copy=False)
            try:
                reply_id, body, payload, ok = decode_reply([frame.buffer for frame in frames])
            except ProtocolError as exc:
                op = self._outstanding.get(request_id, "?")
                raise ProtocolError(f"bad reply while waiting for {op!r}: {exc.message}") from exc
            if reply_id == request_id:
                return body, payload, ok
            if reply_id in self._outstanding:
                self._early[reply_id] = (body, payload, ok)
            # Anything else answers a request we gave up on: drop it.

    def _check_alive(self, request_id: str) -> None:
        """Raise DaemonDied when the daemon this request waits on is gone (lock released)."""
        if holder_pid(lock_path(self.endpoint)) is None:
            op = self._outstanding.pop(request_id, "?")
            self._outstanding.clear()  # nobody is left to withdraw them from
            self.close()  # the socket may hold queued requests for a daemon that no longer exists
            raise DaemonDied(f"hotswapd on {self.endpoint} died while {op!r} was waiting for its answer; check its log")

    def _timeout_error(self, request_id: str, waited: float) -> Exception:
        op = self._outstanding.pop(request_id, "?")
        pid = holder_pid(lock_path(self.endpoint))
        if pid is None:
            return DaemonNotRunning(f"no hotswapd answered {op!r} on {self.endpoint}: the daemon is not running")
        who = f"hotswapd (pid {pid})" if pid > 0 else "hotswapd"
        return DaemonTimeout(
            f"{who} did not answer {op!r} within {waited:g} s; it is running but busy "
            "(a model may still be loading): retry with a larger --timeout or check its log"
        )

    def request(self, op: Op, *, model: str | None = None, options: dict[str, Any] | None = None, payload: list[bytes] | None = None, timeout: float | None = None) -> tuple[dict[str, Any], list[memoryview]]:
        return self.receive(self.send(op, model=model, options=options, payload=payload), timeout)

    # -- API ----------------------------------------------------------------------------
    def encode(self, texts: Sequence[Text], model: str | None = None, *, normalize: bool | None = None, key: str | None = None, timeout: float | None = None, no_cache: bool = False, prompt: str | None = None,
               ranges: bool = False) -> EncodeResult:
        """Embed ``texts`` in one request (the daemon caps the count: daemon.max_batch_texts).
        ``model`` may pin a version as ``"name@version"``. ``key`` is the sticky key of a
        rollout: the same key always lands on the same version. ``no_cache`` skips the
        daemon's embedding cache (to time the model itself). ``prompt`` names one of the
        version's prompts ("query", "passage"), put before each text by the daemon.
        ``ranges`` asks for the version's int8/uint8 calibration with the rows, for
        ``result.compact("int8")`` (float16 and the binary types need none).
        """
        request_id = self._send_encode(texts, model, {**options_of(normalize, key, prompt), **({"ranges": True} if ranges else {})}, timeout, no_cache)
        return self._receive_encode(request_id, timeout)

    def encode_stream(
        self, chunks: Iterable[Sequence[Text]], model: str | None = None, *, normalize: bool | None = None, key: str | None = None,
        window: int = 4, pin: bool = True, sort_window: int = SORT_WINDOW, prompt: str | None = None, pace: Pace | None = None, ranges: bool = False,
    ) -> Iterator[EncodeResult]:
        """Embed chunk after chunk, ``window`` requests in flight; one result per chunk, in order.
        ``pin``: every chunk is encoded by the version that answered the first one, even if
        the active version changes mid-job. Texts go in length order within windows of
        ``sort_window`` texts (0: as they come): batches pad less (hotswapd.client.stream_order).
        A chunk refused as ``busy`` is sent again after the daemon's retry hint, in order.
        ``pace`` (a progress display's) hears of each answer and sizes the sorted pieces.
        """
        options = {**options_of(normalize, key, prompt), **({"ranges": True} if ranges else {})}
        if sort_window > 0:
            return sorted_stream(chunks, sort_window, lambda ordered: self._encode_in_flight(ordered, model, options, window, pin, pace),
                                 pace.piece if pace is not None else None)
        return self._encode_in_flight(chunks, model, options, window, pin, pace)

    def _encode_in_flight(self, chunks: Iterable[Sequence[Text]], model: str | None, options: dict[str, Any], window: int, pin: bool,
                          pace: Pace | None = None) -> Iterator[EncodeResult]:
        if pace is not None:
            yield from paced(self._encode_in_flight(chunks, model, options, window, pin), pace)
            return
        iterator = iter(chunks)
        start = 0  # input position of the chunk's first text: errors name the text in input terms
        if pin and (model is None or "@" not in model):
            first = next(iterator, None)
            if first is None:
                return
            result = in_input_terms(lambda: self._encode_retrying(first, model, options), start)
            model = f"{result.model}@{result.version}"
            start += len(first)
            yield result
        pending: deque[tuple[str, Sequence[Text], int]] = deque()
        try:
            for chunk in iterator:
                pending.append((self._send_encode(chunk, model, options), chunk, start))
                start += len(chunk)
                if len(pending) >= window:
                    yield self._receive_in_order(pending.popleft(), model, options)
            while pending:
                yield self._receive_in_order(pending.popleft(), model, options)
        finally:
            # Stopped early (an error, a caller that broke off): the answers still in flight
            # are nobody's; withdraw them, and forget them, or each would be kept when it comes.
            self._withdraw([request_id for request_id, _, _ in pending])
            for request_id, _, _ in pending:
                self._outstanding.pop(request_id, None)
                self._early.pop(request_id, None)

    def _receive_in_order(self, sent: tuple[str, Sequence[Text], int], model: str | None, options: dict[str, Any]) -> EncodeResult:
        request_id, chunk, start = sent
        return in_input_terms(lambda: self._receive_retrying(request_id, chunk, model, options), start)

    def _encode_retrying(self, texts: Sequence[Text], model: str | None, options: dict[str, Any]) -> EncodeResult:
        return self._receive_retrying(self._send_encode(texts, model, options), texts, model, options)

    def _receive_retrying(self, request_id: str, texts: Sequence[Text], model: str | None, options: dict[str, Any]) -> EncodeResult:
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return self._receive_encode(request_id, None)
            except Busy as busy:
                if attempt == BUSY_RETRIES:
                    raise
                time.sleep(min(5.0, busy.retry_after * (1 + attempt / 4)))
                request_id = self._send_encode(texts, model, options)
        raise AssertionError("unreachable")

    def _send_encode(self, texts: Sequence[Text], model: str | None, options: dict[str, Any], timeout: float | None = None, no_cache: bool = False) -> str:
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode takes a sequence of texts, not a single string")
        options = {**options, **({"no_cache": True} if no_cache else {}), **current_traceparent()}
        # The daemon drops queued work whose caller has given up waiting for it.
        options["deadline_ms"] = min(86_400_000, max(1, int((self.timeout if timeout is None else checked_seconds(timeout)) * 1000)))
        payload = [as_bytes(i, text) for i, text in enumerate(texts)]
        return self.send("encode", model=model, options=options, payload=payload)

    def _receive_encode(self, request_id: str, timeout: float | None) -> EncodeResult:
        result, payload = self.receive(request_id, timeout)
        if len(payload) != 1:
            raise ProtocolError(f"encode reply has {len(payload)} payload frames, expected 1")
        return EncodeResult(result, payload[0])

    def search(self, queries: Text | Sequence[Text], model: str | None = None, *, k: int = 10, key: str | None = None, exact: bool = False, timeout: float | None = None, prompt: str | None = None,
               precision: str | None = None) -> dict[str, Any]:
        """The ``k`` rows of the version's corpus nearest each query, scored by cosine.
        The daemon encodes the queries and searches with one version, picked once for the
        request (``model`` may pin it as ``"name@version"``; ``key`` is a rollout's sticky
        key), so a query is never scored against another version's corpus. The answer names
        that version and its fingerprint; ``results[i]`` is a list of ``{"row", "score",
        "id", "text"}`` for query ``i``, best first. ``exact`` skips the corpus's approximate
        index, if it has one. ``prompt`` names one of the version's prompts ("query")."""
        texts = [queries] if isinstance(queries, (str, bytes)) else list(queries)
        options: dict[str, Any] = {"k": k, **options_of(None, key, prompt), **({"exact": True} if exact else {}), **({"precision": precision} if precision else {}),
                                   **current_traceparent()}
        options["deadline_ms"] = min(86_400_000, max(1, int((self.timeout if timeout is None else checked_seconds(timeout)) * 1000)))
        payload = [as_bytes(i, text) for i, text in enumerate(texts)]
        return self.request("search", model=model, options=options, payload=payload, timeout=timeout)[0]

    def search_reranked(self, query: Text, model: str | None = None, *, rerank: str, k: int = 10, candidates: int = 100, key: str | None = None,
                        exact: bool = False, timeout: float | None = None, prompt: str | None = None) -> dict[str, Any]:
        """Two stages: the ``candidates`` rows of the version's corpus nearest ``query``, then
        ordered by the rerank version ``rerank`` (a cross-encoder reads query and row text
        together); the best ``k``. The answer names both versions; each hit keeps its
        first-stage cosine as ``retrieval_score`` and gets the reranker's ``score``."""
        found = self.search(query, model, k=max(k, candidates), key=key, exact=exact, timeout=timeout, prompt=prompt)
        hits = found["results"][0]
        if not hits:
            return {**found, "reranker": None}
        if any(hit.get("text") is None for hit in hits):
            raise RequestError(f"the corpus of {found['model']}@{found['version']} keeps no texts (built with --no-texts): there is nothing to rerank")
        scored = self.rerank(query, [hit["text"] for hit in hits], rerank, top_n=k, key=key, timeout=timeout)
        results = [{**hits[item["index"]], "score": item["score"], "retrieval_score": hits[item["index"]]["score"]} for item in scored["results"]]
        reranker = {name: scored[name] for name in ("model", "version", "fingerprint")}
        return {**found, "k": k, "candidates": len(hits), "results": [results], "reranker": reranker}

    def rerank(
        self, query: Text, documents: Sequence[Text], model: str | None = None, *, top_n: int | None = None, raw_scores: bool = False,
        key: str | None = None, timeout: float | None = None, no_cache: bool = False, count_tokens: bool = False, prompt: str | None = None,
    ) -> dict[str, Any]:
        """Score ``documents`` against ``query`` with a rerank version (a cross-encoder), one
        version for the whole request. ``results`` are ``{"index", "score"}``, best first
        (``top_n`` of them); a score is the model's sigmoid, or its raw logit with
        ``raw_scores``. The answer names the version and its fingerprint."""
        options: dict[str, Any] = {**options_of(None, key, prompt), **current_traceparent()}
        for name, value in (("top_n", top_n), ("raw_scores", raw_scores or None), ("no_cache", no_cache or None), ("count_tokens", count_tokens or None)):
            if value is not None:
                options[name] = value
        options["deadline_ms"] = min(86_400_000, max(1, int((self.timeout if timeout is None else checked_seconds(timeout)) * 1000)))
        payload = [as_bytes(i, text) for i, text in enumerate([query, *documents])]
        return self.request("rerank", model=model, options=options, payload=payload, timeout=timeout)[0]

    def count_tokens(self, texts: Text | Sequence[Text], model: str | None = None, *, prompt: str | None = None, key: str | None = None, details: bool = False) -> dict[str, Any]:
        """Tokens per text for the version (its own tokenizer, after its prompt), without
        running the model: ``{"model", "version", "tokens": [...], "total", "max_tokens"}``;
        ``details`` adds each text's tokens (id, text, special, start, stop)."""
        texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
        payload = [as_bytes(i, text) for i, text in enumerate(texts)]
        options = {**options_of(None, key, prompt), **({"details": True} if details else {})}
        return self.request("tokens", model=model, options=options, payload=payload)[0]

    def ping(self, timeout: float | None = None) -> dict[str, Any]:
        return self.request("ping", timeout=timeout)[0]

    def models(self) -> list[dict[str, Any]]:
        return self.request("models")[0]["models"]

    def status(self) -> dict[str, Any]:
        return self.request("status")[0]

    def fleet(self) -> dict[str, Any]:
        """A fleet member's view of its fleet (``hs fleet status``): members, generations and
        lag, what each serves, each model's committed state, proposals in progress."""
        return self.request("fleet")[0]

    def preload(self, model: str | None = None) -> dict[str, Any]:
        return self.request("preload", model=model)[0]

    def evict(self, model: str | None = None) -> dict[str, Any]:
        return self.request("evict", model=model)[0]

    def switch(self, model: str | None, version: str, strategy: str = "immediate", **options: Any) -> dict[str, Any]:
        """Make ``version`` active (strategy immediate) or start a canary/split/gradual rollout.
        Options: share (percent), sticky, steps, step_seconds, step_requests, force. The
        audit log records the switch as made through the API (``hs`` passes trigger="cli")."""
        return self.request("switch", model=model, options={"version": version, "strategy": strategy, "trigger": "api", **options})[0]

    def abort_rollout(self, model: str | None = None, *, trigger: str = "api") -> dict[str, Any]:
        return self.request("switch", model=model, options={"abort": True, "trigger": trigger})[0]

    def rollback(self, model: str | None = None, *, trigger: str = "api") -> dict[str, Any]:
        return self.request("rollback", model=model, options={"trigger": trigger})[0]

    def history(self, model: str | None = None, *, limit: int = 50, all_events: bool = False, skip: int = 0) -> list[dict[str, Any]]:
        """The last ``limit`` audit entries (at most 10,000 a call), oldest first; ``skip``
        leaves out that many newer ones, to page further back."""
        options: dict[str, Any] = {"limit": limit, "all": all_events, **({"skip": skip} if skip else {})}
        return self.request("history", model=model, options=options)[0]["entries"]

    def reload_config(self) -> dict[str, Any]:
        return self.request("reload")[0]

    def tune(self, model: str | None = None, *, force: bool = False, timeout: float = 3600.0) -> dict[str, Any]:
        """Measure the version's paths here (or read the cached choice); minutes the first time."""
        return self.request("tune", model=model, options={"force": force}, timeout=timeout)[0]

    def metrics(self) -> str:
        return self.request("metrics")[0]["text"]

    def shutdown(self) -> dict[str, Any]:
        return self.request("shutdown")[0]

    def close(self) -> None:
        """Close the connection. Requests still waiting for their answer (a Ctrl-C, a
        stream abandoned) are withdrawn first: the daemon drops their queued work at once
        instead of at their deadlines."""
        if self._socket is None:
            return
        withdrawn = self._withdraw(list(self._outstanding))
        self._outstanding.clear()
        self._socket.close(linger=CANCEL_LINGER_MS if withdrawn else 0)
        self._socket = None

    def _withdraw(self, request_ids: list[str]) -> int:
        """Tell the daemon these requests' answers are not wanted (``cancel``: their queued
        work is dropped); without waiting for it. How many were sent."""
        sent = 0
        for request_id in request_ids:
            if self._socket is None or self._outstanding.get(request_id) not in WITHDRAWABLE_OPS:
                continue
            try:
                self._socket.send_multipart(encode_cancel(request_id), zmq.NOBLOCK)
                sent += 1
            except zmq.ZMQError:  # no daemon to tell (it died, or is not reachable)
                break
        return sent

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
