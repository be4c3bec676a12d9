"""The socket loop: receive, validate, route, send. Nothing else runs on this thread.

One thread owns the ROUTER socket. Cheap ops (ping, status, models) are answered on it
directly; an encode is admitted, given its version and handed to the batcher with a
completion callback; everything that may block (loads, switches, files) goes to a worker
pool. Replies from other threads come back through an inproc PUSH/PULL pair because
ZeroMQ sockets must not be shared between threads. So a long batch, a load or a slow disk
never stops ``ping`` or ``status`` from being answered.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from hotswapd.core.curve import secure
from hotswapd.core.handlers import DaemonState, Handlers
from hotswapd.core.op_types import Deferred, Outcome, Queued
from hotswapd.core.workers import Workers
from hotswapd.errors import Cancelled, HotswapError, InternalError, ProtocolError, ShuttingDown
from hotswapd.host.paths import ipc_path
from hotswapd.wire.protocol import CANCEL_OP, Request, decode_request, encode_error, encode_ok, request_id_of

log = logging.getLogger(__name__)

POLL_MS = 100
WAKE = b""  # a one-frame empty message on the replies pipe: no reply has one frame that is empty
SOCKET_CHECK_SECONDS = 1.0  # how often the ipc socket file is checked for having vanished
# Bigger than any frame we accept, so oversized texts get a typed error instead of ZeroMQ
# silently dropping the connection.
MAX_FRAME_BYTES = 64 * 2**20
RECEIVE_HWM = 128
# After the drain, requests still in flight are withdrawn; the batches already on the model
# get this long to finish and be answered before the loop stops regardless.
AFTER_DRAIN_SECONDS = 3.0
_router_ids = itertools.count()


class Router:
    def __init__(self, context: zmq.Context[Any], endpoint: str, handlers: Handlers, state: DaemonState, workers: Workers) -> None:
        self._context = context
        self._endpoint = endpoint
        self._handlers = handlers
        self._state = state
        self._workers = workers
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        # Messages ZeroMQ may hold per client before the socket thread reads them: a client
        # flooding huge requests waits in its own send queue instead of our memory.
        self._socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._socket.setsockopt(zmq.LINGER, 2000)
        self._replies_address = f"inproc://hotswapd-replies-{os.getpid()}-{next(_router_ids)}"
        self._replies = context.socket(zmq.PULL)
        self._replies.bind(self._replies_address)
        self._local = threading.local()
        self._push_sockets: list[zmq.Socket[Any]] = []
        self._push_lock = threading.Lock()
        self._closed = False
        # Requests in flight that can be withdrawn: (client identity, request id) -> their
        # withdraw (a list: a client may reuse an id while a request of it is in flight).
        self._withdrawable: dict[tuple[bytes, str], list[Callable[[HotswapError], None]]] = {}
        self._withdrawable_lock = threading.Lock()
        self.withdrawals = 0  # requests a client's cancel reached (read by tests; written by the socket thread only)
        self._bound = False  # only a socket file this router bound is its to remove
        self._socket_checked = time.monotonic()
        self._auth = secure(context, self._socket) if endpoint.startswith("tcp://") else None

    def bind(self) -> None:
        """Bind the endpoint; an ipc socket file is made readable and writable by its owner only."""
        old_umask = os.umask(0o077)
        try:
            self._socket.bind(self._endpoint)
        finally:
            os.umask(old_umask)
        self._bound = True
        path = ipc_path(self._endpoint)
        if path is not None:
            os.chmod(path, 0o600)
        log.info("listening on %s", self._endpoint)

    def bind_inproc(self) -> str:
        """Also listen on an in-process address: the HTTP endpoint's bridge connects there and
        is one more client (no CURVE on inproc; it never leaves the process)."""
        address = f"inproc://hotswapd-http-{os.getpid()}-{next(_router_ids)}"
        self._socket.bind(address)
        return address

    def serve(self, stop: threading.Event, drain_seconds: float) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._replies, zmq.POLLIN)
        drain_deadline: float | None = None
        withdrawn_at: float | None = None
        while True:
            if drain_deadline is None and (stop.is_set() or self._state.stop_requested):
                self._state.phase = "stopping"
                drain_deadline = time.monotonic() + drain_seconds
                log.info("stopping: finishing %d request(s) in flight", self._state.in_flight)
            if drain_deadline is not None:
                if self._state.in_flight == 0:
                    break
                now = time.monotonic()
                if withdrawn_at is None and now > drain_deadline:
                    # What is still queued is dropped and answered `shutting_down`; only the
                    # batches on the model now are waited for, a short while.
                    withdrawn_at = now
                    count = self._withdraw_all(ShuttingDown(f"hotswapd stopped before this request was done (its drain of {drain_seconds:g} s passed)"))
                    log.warning("stopping with %d request(s) unfinished after %.0f s; %d withdrawn", self._state.in_flight, drain_seconds, count)
                if withdrawn_at is not None and now > withdrawn_at + AFTER_DRAIN_SECONDS:
                    log.warning("stopping with %d request(s) unanswered", self._state.in_flight)
                    break
            try:
                events = dict(poller.poll(POLL_MS))
                if self._replies in events:
                    self._forward_replies()
                if self._socket in events:
                    self._receive_requests()
                self._check_socket_file()
            except Exception:  # noqa: BLE001 -- the socket thread must outlive any bug
                log.exception("socket loop: unexpected error; carrying on")

    def _check_socket_file(self) -> None:
        """Re-create the ipc socket file if somebody deleted it (a tmp cleaner, a user):
        without it no client can reach a daemon that still holds the endpoint's lock."""
        now = time.monotonic()
        if now - self._socket_checked < SOCKET_CHECK_SECONDS:
            return
        self._socket_checked = now
        path = ipc_path(self._endpoint)
        if path is None or path.exists():
            return
        log.warning("socket file %s vanished; binding it again", path)
        try:
            self._socket.unbind(self._endpoint)
        except zmq.ZMQError as exc:
            log.debug("unbind before re-binding: %s", exc)
        try:
            self.bind()
        except (OSError, zmq.ZMQError) as exc:
            log.error("cannot re-create socket file %s: %s", path, exc)

    def _forward_replies(self) -> None:
        while True:
            try:
                frames = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) == 1 and frames[0].bytes == WAKE:
                continue  # not a reply: the loop only had to look at its stop flag
            self._state.in_flight -= 1
            self._send(frames)

    def _receive_requests(self) -> None:
        # Bounded, so a flood of requests cannot starve reply forwarding.
        for _ in range(256):
            peer = None
            try:
                if self._auth is None:
                    identity, *frames = self._socket.recv_multipart(zmq.NOBLOCK)
                else:  # frames as objects, to read the CURVE key's name the ZAP handler set
                    message = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    peer = _user_id(message[-1])
                    identity, *frames = [frame.bytes for frame in message]
            except zmq.Again:
                return
            except ValueError:  # a message with no identity frame cannot be answered
                continue
            self._dispatch(identity, frames, peer)

    def _dispatch(self, identity: bytes, frames: list[bytes], peer: str | None = None) -> None:
        request_id = ""
        try:
            try:
                request = decode_request(frames)  # the header is parsed once, here
            except HotswapError:
                request_id = request_id_of(frames)  # a header that failed validation: its id, if it has one
                raise
            request_id = request.id
            if self._state.phase == "stopping" and request.op != CANCEL_OP:  # a withdrawal still helps the drain
                raise ShuttingDown("hotswapd is shutting down and takes no new requests")
            request.peer = peer
            outcome = self._withdraw(identity, request) if request.op == CANCEL_OP else self._handlers.handle(request)
        except HotswapError as exc:
            self._send([identity, *encode_error(request_id, exc)])
            return
        except Exception as exc:  # a bug in a handler must not take the loop down
            log.exception("handler failed for request %s", request_id)
            self._send([identity, *encode_error(request_id, InternalError(f"{type(exc).__name__}: {exc}"))])
            return
        if isinstance(outcome, Outcome):
            self._send([identity, *encode_ok(request_id, outcome.result, outcome.payload)])
            return
        self._state.in_flight += 1
        reply = _OneReply(self, identity, request_id)
        if isinstance(outcome, Queued):
            job = outcome.job
            self._workers.submit(outcome.pool, lambda: reply(_run(job, request_id)))
            return
        assert isinstance(outcome, Deferred)
        if outcome.withdraw is not None:
            with self._withdrawable_lock:
                self._withdrawable.setdefault((identity, request_id), []).append(outcome.withdraw)
            reply.on_sent = lambda who, rid, withdraw=outcome.withdraw: self._forget(who, rid, withdraw)
        try:
            outcome.start(reply)
        except Exception as exc:  # noqa: BLE001 -- whatever failed, the request gets its one reply
            log.exception("starting request %s failed", request_id)
            reply(exc if isinstance(exc, HotswapError) else InternalError(f"{type(exc).__name__}: {exc}"))

    def _withdraw(self, identity: bytes, request: Request) -> Outcome:
        """The router's own op, scoped to the sender: nobody withdraws another's request.
        ``cancel``: drop what is not yet run of the sender's request ``id``; it is still
        answered (``cancelled``), once, as every request is."""
        unknown = set(request.options) - {"id"}
        target = request.options.get("id")
        if unknown or not isinstance(target, str) or not target:
            raise ProtocolError("op 'cancel' takes one option, 'id': the id of a request of yours in flight")
        with self._withdrawable_lock:
            withdraws = list(self._withdrawable.get((identity, target), ()))
        for withdraw in withdraws:
            withdraw(Cancelled("the client withdrew the request (it left); its remaining work was dropped"))
        self.withdrawals += len(withdraws)
        return Outcome({"id": target, "withdrawn": bool(withdraws)})

    def _withdraw_all(self, why: HotswapError) -> int:
        with self._withdrawable_lock:
            withdraws = [withdraw for entries in self._withdrawable.values() for withdraw in entries]
        for withdraw in withdraws:
            withdraw(why)
        return len(withdraws)

    def _forget(self, identity: bytes, request_id: str, withdraw: Callable[[HotswapError], None]) -> None:
        """Its reply is sent: no cancel can reach it (nor, by its id, a newer request's entry)."""
        key = (identity, request_id)
        with self._withdrawable_lock:
            entries = self._withdrawable.get(key, [])
            if withdraw in entries:
                entries.remove(withdraw)
            if not entries:
                self._withdrawable.pop(key, None)

    @property
    def withdrawable(self) -> int:
        """Requests in flight that a ``cancel`` can still reach (bounded by admission)."""
        with self._withdrawable_lock:
            return sum(len(entries) for entries in self._withdrawable.values())

    def push_reply(self, frames: list[Any]) -> None:
        """Hand a finished reply to the socket thread (from any thread, this one included).
        After :meth:`close` there is nobody to send it: it is dropped."""
        with self._push_lock:
            if self._closed:
                log.debug("reply dropped: the daemon has stopped serving")
                return
            sock = getattr(self._local, "push", None)
            if sock is None:
                sock = self._context.socket(zmq.PUSH)
                sock.setsockopt(zmq.SNDHWM, 0)  # replies are bounded by admission, never dropped here
                sock.connect(self._replies_address)
                self._local.push = sock
                self._push_sockets.append(sock)
            # Under the lock, so that close() never closes a socket while a thread sends on it.
            sock.send_multipart(frames, copy=False)

    def wake(self) -> None:
        """Wake the socket thread now (a stop was asked): without it, it notices at its next
        poll timeout, and a stop with nothing in flight would wait that long for nothing."""
        self.push_reply([WAKE])

    def _send(self, frames: list[Any]) -> None:
        try:
            self._socket.send_multipart(frames, copy=False)
        except zmq.ZMQError as exc:  # the client went away; nothing to answer
            log.debug("reply dropped: %s", exc)

    def close(self) -> None:
        self._forward_replies()
        with self._push_lock:
            self._closed = True
            for sock in self._push_sockets:
                sock.close(linger=0)
        self._replies.close(linger=0)
        self._socket.close()
        if self._auth is not None:
            self._auth.stop()
        path = ipc_path(self._endpoint)
        if path is not None and self._bound:
            path.unlink(missing_ok=True)


class _OneReply:
    """The reply of one request: encoded and pushed exactly once, whatever thread calls it."""

    __slots__ = ("_router", "_identity", "_request_id", "_sent", "_lock", "on_sent")

    def __init__(self, router: Router, identity: bytes, request_id: str) -> None:
        self._router = router
        self._identity = identity
        self._request_id = request_id
        self._sent = False
        self._lock = threading.Lock()
        self.on_sent: Callable[[bytes, str], None] | None = None  # the router forgets a withdrawable request

    def __call__(self, outcome: Outcome | HotswapError) -> None:
        with self._lock:
            if self._sent:
                log.error("a second reply to request %s was dropped", self._request_id)
                return
            self._sent = True
        if self.on_sent is not None:
            self.on_sent(self._identity, self._request_id)
        try:
            if isinstance(outcome, Outcome):
                frames = encode_ok(self._request_id, outcome.result, outcome.payload)
            else:
                frames = encode_error(self._request_id, outcome)
        except Exception as exc:  # noqa: BLE001 -- an unencodable result still gets an answer
            log.exception("encoding the reply to %s failed", self._request_id)
            frames = encode_error(self._request_id, InternalError(f"{type(exc).__name__}: {exc}"))
        self._router.push_reply([self._identity, *frames])


def _user_id(frame: Any) -> str | None:
    try:
        return frame.get("User-Id") or None
    except (zmq.ZMQError, KeyError, AttributeError):
        return None


def _run(job: Any, request_id: str) -> Outcome | HotswapError:
    try:
        return job()
    except HotswapError as exc:
        return exc
    except Exception as exc:  # the job's failure belongs to its request, not to the worker
        log.exception("job failed for request %s", request_id)
        return InternalError(f"{type(exc).__name__}: {exc}")
