"""Connection-level bounds uvicorn does not have: how many connections are open at once,
and how long a client may take to send a request's head.

uvicorn closes an idle kept-alive connection after ``timeout_keep_alive``, but a connection
that sends nothing at all, or its headers a byte every few seconds, stays open forever
(slowloris); enough of them take every file descriptor of the process, and then the
daemon can open nothing: not a model file, not a socket. So:

- a connection past ``max_connections`` is closed as soon as it is accepted (its client
  sees a reset and retries; the ones being served are unaffected);
- a connection with no request being served is closed ``read_timeout`` seconds after it
  opened or after its last response, whether it sent half a head or nothing. A request whose
  head arrived is the app's: its body has its own deadline there (408).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hotswapd.http.settings import HttpConfig


def guarded_protocol(settings: HttpConfig) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools when installed, else h11), with the bounds."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools is optional for uvicorn; h11 always comes with it
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    read_timeout = settings.read_timeout_seconds
    max_connections = settings.max_connections

    class GuardedProtocol(Base):  # type: ignore[misc, valid-type]
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()  # the next request's head has the same time

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
            if not serving and not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol
