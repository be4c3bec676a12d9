"""CURVE on the daemon's TCP socket: only authorised client keys get in, by name.

A ZAP handler (pyzmq's authenticator, on a thread of its own) checks each connecting
client's public key against ``keys/authorized/`` at connection time, so a key added with
`hs keys add` works without a restart and a removed one is refused from the next
connection. The name of the key becomes the messages' ``User-Id``, which the router hands
to the handlers for the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from hotswapd.host import curve_keys

log = logging.getLogger(__name__)


class _KeyBook:
    """The authorised keys, re-read only when the directory changes (adding or removing a
    key file changes its mtime), so a flood of handshakes does not rescan it each time."""

    def __init__(self) -> None:
        self._stamp: tuple[int, int] | None = None
        self._by_key: dict[bytes, str] = {}

    def name_of(self, z85_key: bytes) -> str | None:
        directory = curve_keys.authorized_dir()
        try:
            info = directory.stat()
            stamp = (info.st_mtime_ns, info.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._by_key = {public: name for name, public in reversed(list(curve_keys.authorized().items()))}
            self._stamp = stamp
        return self._by_key.get(z85_key)


class _AuthorisedKeys:
    """The credentials provider: asked for every CURVE handshake (on the ZAP thread)."""

    def __init__(self, book: _KeyBook) -> None:
        self._book = book

    def callback(self, domain: str, client_key: bytes) -> bool:
        allowed = self._book.name_of(_z85(client_key)) is not None
        if not allowed:
            log.warning("refused a TCP client with an unknown CURVE key %s", _z85(client_key).decode())
        return allowed


class _NamingAuthenticator(ThreadAuthenticator):
    book = _KeyBook()

    def curve_user_id(self, client_public_key: bytes) -> str:
        z85 = _z85(client_public_key)
        return self.book.name_of(z85) or z85.decode()


def _z85(key: bytes) -> bytes:
    return key if len(key) == 40 else zmq.utils.z85.encode(key)


def secure(context: zmq.Context[Any], socket: zmq.Socket[Any]) -> ThreadAuthenticator:
    """Make ``socket`` a CURVE server admitting only authorised keys; returns the running
    authenticator (stop it at shutdown). Raises ConfigError without server keys."""
    public, secret = curve_keys.server_keys()
    auth = _NamingAuthenticator(context)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AuthorisedKeys(auth.book))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    log.info("TCP endpoint secured with CURVE: %d authorised key(s)", len(curve_keys.authorized()))
    return auth
