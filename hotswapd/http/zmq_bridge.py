"""The HTTP server's way into the daemon: an asyncio DEALER on the router's inproc endpoint.

An HTTP request becomes one more client request: the router admits it, picks its version
(so a canary's share covers HTTP traffic too), batches it with the others and counts it in
the same metrics. One socket carries every request; replies are matched by id, so any
number of requests are in flight without a thread each. The pending count is bounded:
past it, :class:`Busy` at once (429), never a growing queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable
from typing import Any

import zmq
import zmq.asyncio

from hotswapd.errors import Busy, Cancelled, DaemonTimeout, ProtocolError, ShuttingDown, error_from_wire
from hotswapd.wire.protocol import Op, decode_reply, encode_cancel, encode_request

log = logging.getLogger(__name__)

Reply = tuple[dict[str, Any], list[memoryview]]


class Bridge:
    def __init__(self, context: zmq.Context[Any], address: str, max_pending: int) -> None:
        self._context = context
        self._address = address
        self._max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[tuple[dict[str, Any], list[memoryview], bool]]] = {}
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self.withdrawn = 0  # requests withdrawn (client gone or timed out), for tests and metrics

    async def start(self) -> None:
        # A shadow shares the daemon's context, which inproc:// needs, with asyncio sockets.
        shadow = zmq.asyncio.Context.shadow(self._context.underlying)
        self._socket = shadow.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self._address)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        """Every request still waiting is answered ``shutting_down``; the socket closes. Twice is harmless."""
        if self._reader is not None:
            self._reader.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ShuttingDown("hotswapd stopped before this request was answered; retry when it is back"))
        self._pending.clear()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(
        self, op: Op, *, timeout: float, model: str | None = None, options: dict[str, Any] | None = None, payload: list[bytes] | None = None,
        gone: Awaitable[Any] | None = None,
    ) -> Reply:
        """The reply to one request; its typed error raised as the ZeroMQ client would.

        ``gone`` completes when the HTTP client disconnects: the request is then withdrawn
        (the router's ``cancel``), so its queued work is dropped instead of holding the
        model for nobody, and :class:`Cancelled` is raised. Past ``timeout`` it is withdrawn
        too."""
        watcher = asyncio.ensure_future(gone) if gone is not None else None
        request_id = f"h{next(self._ids):x}"
        try:
            if self._socket is None:
                raise ShuttingDown("the HTTP endpoint is not connected to the daemon")
            if len(self._pending) >= self._max_pending:
                raise Busy(f"{len(self._pending)} HTTP requests are waiting (http.max_pending); retry shortly", retry_after=1.0)
            future: asyncio.Future[tuple[dict[str, Any], list[memoryview], bool]] = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            await self._socket.send_multipart(encode_request(request_id, op, model=model, options=options, payload=payload), copy=False)
            waiting: set[asyncio.Future[Any]] = {future} if watcher is None else {future, watcher}
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if future not in done:
                await self._withdraw(request_id)
                if watcher is not None and watcher in done:
                    raise Cancelled("the HTTP client disconnected; its request was withdrawn")
                raise DaemonTimeout(f"no answer within {timeout:g} s (the request's timeout)")
            body, frames, ok = future.result()
        finally:
            self._pending.pop(request_id, None)
            if watcher is not None:
                watcher.cancel()
        if not ok:
            raise error_from_wire(body["code"], body["message"], body.get("retry_after"), body.get("index"))
        return body, frames

    async def _withdraw(self, request_id: str) -> None:
        """Tell the router to drop what it has not run of ``request_id``; its answer to this
        (and the withdrawn request's own) find no pending future and are dropped."""
        if self._socket is None:
            return
        try:
            await self._socket.send_multipart(encode_cancel(request_id), copy=False)
        except zmq.ZMQError as exc:  # the daemon is stopping; nothing left to withdraw from
            log.debug("withdrawing %s: %s", request_id, exc)
        self.withdrawn += 1

    async def _read(self) -> None:
        assert self._socket is not None
        while True:
            try:
                frames = await self._socket.recv_multipart(copy=False)
                request_id, body, payload, ok = decode_reply([frame.buffer for frame in frames])
            except asyncio.CancelledError:
                raise
            except ProtocolError as exc:
                log.error("bad reply from the router: %s", exc.message)
                continue
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    return
                log.error("HTTP bridge: %s", exc)
                await asyncio.sleep(0.05)
                continue
            future = self._pending.get(request_id)
            if future is not None and not future.done():  # else: a request that timed out
                future.set_result((body, payload, ok))
