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
from typing import Any

import zmq
import zmq.asyncio

from hotswapd.errors import Busy, DaemonTimeout, ProtocolError, ShuttingDown, error_from_wire
from hotswapd.wire.protocol import Op, decode_reply, encode_request

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

    async def start(self) -> None:
        # A shadow shares the daemon's context, which inproc:// needs, with asyncio sockets.
        shadow = zmq.asyncio.Context.shadow(self._context.underlying)
        self._socket = shadow.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self._address)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ShuttingDown("hotswapd is stopping"))
        self._pending.clear()
        if self._socket is not None:
            self._socket.close(linger=0)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def request(self, op: Op, *, timeout: float, model: str | None = None, options: dict[str, Any] | None = None, payload: list[bytes] | None = None) -> Reply:
        """The reply to one request; its typed error raised as the ZeroMQ client would."""
        if self._socket is None:
            raise ShuttingDown("the HTTP endpoint is not connected to the daemon")
        if len(self._pending) >= self._max_pending:
            raise Busy(f"{len(self._pending)} HTTP requests are waiting (http.max_pending); retry shortly", retry_after=1.0)
        request_id = f"h{next(self._ids):x}"
        future: asyncio.Future[tuple[dict[str, Any], list[memoryview], bool]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._socket.send_multipart(encode_request(request_id, op, model=model, options=options, payload=payload), copy=False)
            body, frames, ok = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise DaemonTimeout(f"no answer within {timeout:g} s (http.timeout_seconds)") from None
        finally:
            self._pending.pop(request_id, None)
        if not ok:
            raise error_from_wire(body["code"], body["message"], body.get("retry_after"), body.get("index"))
        return body, frames

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
