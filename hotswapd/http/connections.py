"""Connection-level bounds uvicorn does not have: how many connections are open at once,
how long a client may take to send a request's head, how big the head may be, and how
long an answer may sit unread.

uvicorn closes an idle kept-alive connection after ``timeout_keep_alive``, but a connection
that sends nothing at all, or its headers a byte every few seconds, stays open forever
(slowloris); enough of them take every file descriptor of the process, and then the
daemon can open nothing: not a model file, not a socket. So:

- a connection past ``max_connections`` is closed as soon as it is accepted (its client
  sees a reset and retries; the ones being served are unaffected);
- a connection with no request being served is dropped ``read_timeout`` seconds after it
  opened or after its last response, whether it sent half a head or nothing. A request whose
  head arrived is the app's: its body has its own deadline there (408);
- a request uvicorn cannot parse is answered 400 in OpenAI's error shape, as every other
  error here (uvicorn's own answer is plain text);
- a head past ``MAX_HEAD_BYTES`` is answered 431 and closed (uvicorn's httptools path has no
  limit, and parsing a 64 MiB header held the HTTP thread for 5 s);
- an answer the client does not read (its window shut) is dropped when ``read_timeout``
  seconds pass without the client taking any of it: without it, its buffer and its connection slot were held for as
  long as the client liked, and ``close()`` waits for a flush that never comes, so it
  ``abort()``s.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hotswapd.config.http_section import HttpConfig

MAX_HEAD_BYTES = 64 * 1024
_TOO_LARGE_BODY = b'{"error": {"message": "the request head is over 64 KiB", "type": "invalid_request_error", "param": null, "code": null}}'
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TOO_LARGE_BODY)}\r\n\r\n".encode()
    + _TOO_LARGE_BODY
)


def malformed(message: str) -> bytes:
    """A 400 for a request uvicorn could not parse, in OpenAI's error shape (uvicorn's own
    is plain text)."""
    body = json.dumps({"error": {"message": f"malformed HTTP request: {message[:200]}", "type": "invalid_request_error", "param": None, "code": "bad_request"}}).encode()
    return b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n" + f"content-length: {len(body)}\r\n\r\n".encode() + body


def guarded_protocol(settings: HttpConfig) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools when installed, else h11), with the bounds."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional for uvicorn; h11 always comes with it (and caps heads itself)
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    read_timeout = settings.read_timeout_seconds
    max_connections = settings.max_connections

    class GuardedProtocol(Base):  # type: ignore[misc, valid-type]
        _head_deadline: asyncio.TimerHandle | None = None
        _write_deadline: asyncio.TimerHandle | None = None
        _unread_at_arming = 0
        _head_bytes: int | None = 0  # bytes of a head still coming; None once it is complete

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.abort()
                return
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            self._disarm_write_deadline()
            super().connection_lost(exc)
            # uvicorn tells only the newest request of a connection that it went; one still
            # running behind a pipelined request would never learn it, and never be withdrawn.
            for cycle in getattr(self, "_cycles", ()):
                if not cycle.response_complete and not cycle.disconnected:
                    cycle.disconnected = True
                    cycle.message_event.set()

        def data_received(self, data: bytes) -> None:
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_bytes is not None and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            if not self.transport.is_closing():
                self.transport.write(malformed(msg))
                self.transport.close()

        def on_headers_complete(self) -> None:  # httptools only: h11 caps heads at 16 KiB itself
            self._head_bytes = None
            super().on_headers_complete()
            # Every request of the connection not yet answered (a pipelined one included).
            live = [cycle for cycle in getattr(self, "_cycles", ()) if not cycle.response_complete]
            self._cycles = [*live, self.cycle]

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._head_bytes = 0
            if not self.transport.is_closing():
                self._arm_head_deadline()  # the next request's head has the same time
            if self.transport.get_write_buffer_size() > 0:
                self._arm_write_deadline()  # the answer still waits for the client to read it

        def pause_writing(self) -> None:
            super().pause_writing()
            self._arm_write_deadline()

        def resume_writing(self) -> None:
            super().resume_writing()
            self._disarm_write_deadline()

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_deadline = self.loop.call_later(read_timeout, self._head_deadline_passed)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_deadline_passed(self) -> None:
            self._head_deadline = None
            serving = self.cycle is not None and not self.cycle.response_complete
            if serving or self.transport.is_closing():
                return
            if self.transport.get_write_buffer_size() > 0:
                self._arm_head_deadline()  # an answer still being read: the write deadline judges it
                return
            self.transport.abort()

        def _arm_write_deadline(self) -> None:
            if self._write_deadline is None:
                self._unread_at_arming = self.transport.get_write_buffer_size()
                self._write_deadline = self.loop.call_later(read_timeout, self._write_deadline_passed)

        def _disarm_write_deadline(self) -> None:
            if self._write_deadline is not None:
                self._write_deadline.cancel()
                self._write_deadline = None

        def _write_deadline_passed(self) -> None:
            self._write_deadline = None
            unread = self.transport.get_write_buffer_size()
            if unread == 0:
                return
            if unread < self._unread_at_arming:
                self._arm_write_deadline()  # a slow reader, but a reader: another period
            else:
                self.transport.abort()  # the client stopped reading: its answer and its slot go

    return GuardedProtocol
