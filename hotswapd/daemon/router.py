"""The socket loop: receive, validate, dispatch, reply.

One thread owns the ROUTER socket. Cheap ops are answered on it directly; jobs
(inference, loading) go to worker threads, which hand their replies back through an
inproc PUSH/PULL pair because ZeroMQ sockets must not be shared between threads. So a
long batch never stops ``ping`` or ``status`` from being answered.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

from hotswapd.daemon.handlers import SLOW_OPS, DaemonState, Handlers, Job, Outcome
from hotswapd.errors import HotswapError, InternalError, ShuttingDown
from hotswapd.paths import ipc_path
from hotswapd.protocol import decode_request, encode_error, encode_ok, request_id_of

log = logging.getLogger(__name__)

POLL_MS = 100
# Bigger than any frame we accept, so oversized texts get a typed error instead of ZeroMQ
# silently dropping the connection.
MAX_FRAME_BYTES = 64 * 2**20
REQUEST_THREADS = 64
_router_ids = itertools.count()


class Router:
    def __init__(self, context: zmq.Context[Any], endpoint: str, handlers: Handlers, state: DaemonState) -> None:
        self._context = context
        self._endpoint = endpoint
        self._handlers = handlers
        self._state = state
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self._socket.setsockopt(zmq.LINGER, 2000)
        self._replies_address = f"inproc://hotswapd-replies-{os.getpid()}-{next(_router_ids)}"
        self._replies = context.socket(zmq.PULL)
        self._replies.bind(self._replies_address)
        # Request threads mostly wait: on the batcher's single inference thread (the
        # backends parallelise inside a batch, and two batches at once on a few cores only
        # slow each other down) or on a load. Enough of them to let a crowd of clients
        # merge into full batches. Loading ops get their own thread, so a preload never
        # queues behind inference.
        self._requests = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="hotswapd-request")
        self._loading = ThreadPoolExecutor(1, thread_name_prefix="hotswapd-load")
        self._local = threading.local()
        self._push_sockets: list[zmq.Socket[Any]] = []
        self._push_lock = threading.Lock()

    def bind(self) -> None:
        """Bind the endpoint; an ipc socket file is made readable and writable by its owner only."""
        old_umask = os.umask(0o077)
        try:
            self._socket.bind(self._endpoint)
        finally:
            os.umask(old_umask)
        path = ipc_path(self._endpoint)
        if path is not None:
            os.chmod(path, 0o600)
        log.info("listening on %s", self._endpoint)

    def submit_loading(self, work: Callable[[], None]) -> None:
        """Run housekeeping (start-up preloads, reload preloads) on the loading thread."""
        self._loading.submit(work)

    def serve(self, stop: threading.Event, on_tick: Callable[[], None], drain_seconds: float) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._replies, zmq.POLLIN)
        drain_deadline: float | None = None
        while True:
            if drain_deadline is None and (stop.is_set() or self._state.stop_requested):
                self._state.phase = "stopping"
                drain_deadline = time.monotonic() + drain_seconds
                log.info("stopping: finishing %d request(s) in flight", self._state.in_flight)
            if drain_deadline is not None:
                if self._state.in_flight == 0:
                    break
                if time.monotonic() > drain_deadline:
                    log.warning("stopping with %d request(s) unfinished after %.0f s", self._state.in_flight, drain_seconds)
                    break
            events = dict(poller.poll(POLL_MS))
            if self._replies in events:
                self._forward_replies()
            if self._socket in events:
                self._receive_requests()
            on_tick()

    def _forward_replies(self) -> None:
        while True:
            try:
                frames = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._state.in_flight -= 1
            self._send(frames)

    def _receive_requests(self) -> None:
        # Bounded, so a flood of requests cannot starve reply forwarding.
        for _ in range(256):
            try:
                identity, *frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:  # a message with no identity frame cannot be answered
                continue
            self._dispatch(identity, frames)

    def _dispatch(self, identity: bytes, frames: list[bytes]) -> None:
        request_id = request_id_of(frames)
        try:
            if self._state.phase == "stopping":
                raise ShuttingDown("hotswapd is shutting down and takes no new requests")
            request = decode_request(frames)
            outcome = self._handlers.handle(request)
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
        pool = self._loading if request.op in SLOW_OPS else self._requests
        self._state.in_flight += 1
        pool.submit(self._run_job, identity, request_id, outcome)

    def _run_job(self, identity: bytes, request_id: str, job: Job) -> None:
        """Runs on a worker thread; whatever happens, exactly one reply goes back."""
        try:
            outcome = job()
            frames = encode_ok(request_id, outcome.result, outcome.payload)
        except HotswapError as exc:
            frames = encode_error(request_id, exc)
        except Exception as exc:  # the job's failure belongs to its request, not to the worker
            log.exception("job failed for request %s", request_id)
            frames = encode_error(request_id, InternalError(f"{type(exc).__name__}: {exc}"))
        self._push_socket().send_multipart([identity, *frames], copy=False)

    def _push_socket(self) -> zmq.Socket[Any]:
        sock = getattr(self._local, "push", None)
        if sock is None:
            sock = self._context.socket(zmq.PUSH)
            sock.connect(self._replies_address)
            self._local.push = sock
            with self._push_lock:
                self._push_sockets.append(sock)
        return sock

    def _send(self, frames: list[Any]) -> None:
        try:
            self._socket.send_multipart(frames, copy=False)
        except zmq.ZMQError as exc:  # the client went away; nothing to answer
            log.debug("reply dropped: %s", exc)

    def close(self) -> None:
        self._requests.shutdown(wait=True, cancel_futures=True)
        self._loading.shutdown(wait=True, cancel_futures=True)
        self._forward_replies()
        for sock in self._push_sockets:
            sock.close(linger=0)
        self._replies.close(linger=0)
        self._socket.close()
        path = ipc_path(self._endpoint)
        if path is not None:
            path.unlink(missing_ok=True)
