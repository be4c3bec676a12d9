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

from hotswapd import keys

log = logging.getLogger(__name__)


class _AuthorisedKeys:
    """The credentials provider: asked for every CURVE handshake."""

    def callback(self, domain: str, client_key: bytes) -> bool:
        known = set(keys.authorized().values())
        allowed = _z85(client_key) in known
        if not allowed:
            log.warning("refused a TCP client with an unknown CURVE key %s", _z85(client_key).decode())
        return allowed


class _NamingAuthenticator(ThreadAuthenticator):
    def curve_user_id(self, client_public_key: bytes) -> str:
        z85 = _z85(client_public_key)
        for name, public in keys.authorized().items():
            if public == z85:
                return name
        return z85.decode()


def _z85(key: bytes) -> bytes:
    return key if len(key) == 40 else zmq.utils.z85.encode(key)


def secure(context: zmq.Context[Any], socket: zmq.Socket[Any]) -> ThreadAuthenticator:
    """Make ``socket`` a CURVE server admitting only authorised keys; returns the running
    authenticator (stop it at shutdown). Raises ConfigError without server keys."""
    public, secret = keys.server_keys()
    auth = _NamingAuthenticator(context)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AuthorisedKeys())
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    log.info("TCP endpoint secured with CURVE: %d authorised key(s)", len(keys.authorized()))
    return auth
