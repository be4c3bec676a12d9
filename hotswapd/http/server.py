"""Runs the HTTP app (uvicorn) on a thread of its own, beside the router.

Why uvicorn + Starlette: the most used ASGI server and a small, well-kept toolkit under it
(FastAPI is built on the same two); no schema machinery we would not use, and uvicorn
runs on a plain thread with its own event loop, which is what a daemon that already owns
its main thread needs. The listening socket is bound here, before the thread starts, so a
port in use is a clear start-up error rather than a thread that dies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from hotswapd.errors import ConfigError
from hotswapd.config.http_keys import KeyRing, load_keys
from hotswapd.http.connections import guarded_protocol
from hotswapd.config.http_section import HttpConfig, parse_listen

log = logging.getLogger(__name__)
STARTED_WITHIN_SECONDS = 10.0
# After the requests still waiting are answered: how long uvicorn waits for their answers to
# be written before it closes the connections regardless.
GRACEFUL_SECONDS = 5
ANSWER_WAITING_SECONDS = 2.0
# uvicorn's idle keep-alive; the head deadline (read_timeout_seconds) closes an idle connection first when shorter.
KEEP_ALIVE_SECONDS = 15


class HttpServer:
    def __init__(self, settings: HttpConfig, listen: str, base_dir: Path, context: zmq.Context[Any], address: str, health: Callable[[], dict[str, Any]]) -> None:
        import uvicorn

        from hotswapd.http.app import build_app

        self.keys = KeyRing(load_keys(settings, base_dir))
        self.settings = settings
        host, port = parse_listen(listen)
        _descriptors_for(settings.max_connections)
        self.listen = listen
        self._socket = _bind(host, port)
        self._app = build_app(settings, self.keys, context, address, health)
        config = uvicorn.Config(
            self._app,
            http=guarded_protocol(settings),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="hotswapd-http", daemon=True)
        self.failure: BaseException | None = None

    def reload(self, settings: HttpConfig, base_dir: Path) -> list[str]:
        """Take a reloaded config's keys now (a removed key is refused from the next request;
        a key source that fails keeps the keys in force and raises ConfigError). Returns the
        other ``[http]`` settings that changed: they need a restart."""
        self.keys.keys = load_keys(settings, base_dir)
        keys_fields = {"api_keys_file", "api_keys_env"}
        before, after = self.settings.model_dump(exclude=keys_fields), settings.model_dump(exclude=keys_fields)
        return sorted(f"http.{name}" for name in before if before[name] != after[name])

    @property
    def url(self) -> str:
        """Where it listens, with the port really bound (``listen`` may say port 0)."""
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTED_WITHIN_SECONDS
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise ConfigError(f"the HTTP endpoint on {self.listen} did not start: {self.failure or 'no answer within 10 s'}")
        log.info("OpenAI-compatible HTTP endpoint on %s/v1", self.url)

    def stop(self) -> None:
        """Called once the router's drain is over: requests still waiting for the daemon are
        answered now, 503 ``service_unavailable`` in OpenAI's shape (not a plain-text 500 when
        uvicorn gives up on them), then the connections close; bounded by GRACEFUL_SECONDS."""
        loop = getattr(self._app.state, "loop", None)
        if loop is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._app.state.bridge.close(), loop).result(ANSWER_WAITING_SECONDS)
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:  # a loop already gone
                log.debug("answering the HTTP requests still waiting: %s", exc)
        self._server.should_exit = True
        self._thread.join(GRACEFUL_SECONDS + 2)
        self._socket.close()

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 -- uvicorn exits with SystemExit on a failed start
            self.failure = exc
            log.error("the HTTP endpoint stopped: %s: %s", type(exc).__name__, exc)


def _descriptors_for(connections: int) -> None:
    """Raise the soft limit on open files toward the hard one, so that ``max_connections``
    open connections still leave descriptors for model files, sockets and the cache."""
    import resource

    needed = connections + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("open files are limited to %d: http.max_connections = %d leaves little for the rest", target, connections)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} for HTTP: {exc.strerror or exc}") from exc
    sock.set_inheritable(False)
    # Inherited by every accepted connection. Without it, a kept-alive connection waited
    # ~40 ms per request (Nagle against delayed ACKs): uvicorn, handed a socket, did not
    # set it on the connections (measured: 44 ms per request before, 0.2 ms after).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
