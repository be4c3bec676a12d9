"""A load generator's HTTP client: one kept-alive HTTP/1.1 connection on a plain socket.

The benchmark's clients share two cores with the server they measure. httpx costs ~1 ms
of client CPU per request, and sixteen of them took a third of the machine from the
server (measured: the daemon got 11.6 CPU-seconds of 16 under httpx load, 13.3 under the
lighter ZeroMQ client), so the HTTP path looked slower than it is. This client does what
wrk or oha do in C (write a request, read one Content-Length answer) in a few Python
calls, and still parses the JSON it gets, as the ZeroMQ client decodes its reply.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson


class KeepAliveClient:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def post_json(self, path: str, body: Any) -> Any:
        payload = orjson.dumps(body)
        head = f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        self._sock.sendall(head.encode("ascii") + payload)
        status, answer = self._read_answer()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
        return orjson.loads(answer)

    def _read_answer(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("an answer without Content-Length (chunked answers are not read here)")
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return status, body

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk

    def close(self) -> None:
        self._sock.close()
