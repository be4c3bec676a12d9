"""CURVE keys for TCP endpoints: the daemon's key pair and the clients it lets in.

Any local user can connect to a TCP port, so a TCP endpoint (loopback or not) is served
only with ZeroMQ's CURVE security: the daemon has a key pair, each client has one, and the
daemon accepts only clients whose public key is listed. Layout, under the config dir
(owner-only)::

    keys/server.key          the daemon's public key (clients need it)
    keys/server.key_secret   the daemon's key pair
    keys/client.key_secret   this user's client key pair (what `hs` and Client use)
    keys/authorized/NAME.key a client's public key, allowed in under NAME

The files are ZeroMQ's certificate format (zmq.auth). This module imports only pyzmq: the
CLI uses it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hotswapd.errors import ConfigError
from hotswapd.host.paths import config_dir
from hotswapd.host.safefiles import is_regular, tighten

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def keys_dir() -> Path:
    return config_dir() / "keys"


def authorized_dir() -> Path:
    return keys_dir() / "authorized"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    tighten(path, 0o700)
    return path


def init_keys() -> dict[str, str]:
    """Create the daemon's and this user's key pairs if missing, and authorise this user's
    client key as ``local``. Returns the public keys."""
    import zmq.auth

    try:
        base = _private_dir(keys_dir())
        _private_dir(authorized_dir())
        for name in ("server", "client"):
            if not (base / f"{name}.key_secret").exists():
                zmq.auth.create_certificates(str(base), name)
            for suffix in (".key", ".key_secret"):
                tighten(base / f"{name}{suffix}", 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create keys in {keys_dir()}: {exc.strerror or exc}") from exc
    client_public, _ = _pair(base / "client.key_secret", "this client")
    if not any(public == client_public for public in authorized().values()):
        add_key("local", client_public.decode())
    server_public, _ = _pair(base / "server.key_secret", "the daemon")
    return {"server": server_public.decode(), "client": client_public.decode()}


def add_key(name: str, public_key: str) -> Path:
    """Allow the client with this public key (Z85, 40 characters) in, under ``name``."""
    if not KEY_NAME.match(name):
        raise ConfigError(f"key name {name!r} must match {KEY_NAME.pattern}")
    if not Z85_KEY.match(public_key):
        raise ConfigError("a public key is 40 Z85 characters (as printed by `hs keys init`)")
    if public_key.encode() in authorized().values():
        raise ConfigError("that public key is already authorised under another name (`hs keys list`)")
    path = _private_dir(authorized_dir()) / f"{name}.key"
    if path.exists():
        raise ConfigError(f"a key named {name!r} is already authorised ({path}); remove it first")
    text = f'#   ZeroMQ CURVE public key of client "{name}" (hotswap)\nmetadata\ncurve\n    public-key = "{public_key}"\n'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def remove_key(name: str) -> bool:
    path = authorized_dir() / f"{name}.key"
    if not KEY_NAME.match(name) or not path.exists():
        return False
    path.unlink()
    return True


def authorized() -> dict[str, bytes]:
    """Name -> public key (Z85 bytes) of every authorised client; unreadable files are skipped."""
    import zmq.auth

    found: dict[str, bytes] = {}
    directory = authorized_dir()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.key")):
        if not is_regular(path):  # a FIFO would block the ZAP handler, and every new client
            continue
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:  # a hand-edited or truncated file: skipped
            import logging

            logging.getLogger("hotswapd").warning("ignoring authorised key %s: %s", path, exc)
            continue
        if public:
            found[path.stem] = public
    return found


def server_keys() -> tuple[bytes, bytes]:
    """The daemon's (public, secret) keys, or ConfigError saying how to make them."""
    return _pair(keys_dir() / "server.key_secret", "the daemon")


def client_keys() -> tuple[bytes, bytes, bytes]:
    """(client public, client secret, server public) for a TCP client."""
    import zmq.auth

    public, secret = _pair(keys_dir() / "client.key_secret", "this client")
    try:
        if not is_regular(keys_dir() / "server.key"):
            raise OSError("missing or not a regular file")
        server_public, _ = zmq.auth.load_certificate(str(keys_dir() / "server.key"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TCP needs the daemon's public key {keys_dir() / 'server.key'}: {exc}; run `hs keys init`") from exc
    return public, secret, server_public


def _pair(path: Path, whose: str) -> tuple[bytes, bytes]:
    import zmq.auth

    try:
        if path.exists() and not is_regular(path):
            raise OSError(f"{path} is not a regular file")
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TCP endpoints need CURVE keys and {whose} has none ({path}: {exc}); run `hs keys init`") from exc
    if not secret:
        raise ConfigError(f"{path} holds no secret key; run `hs keys init`")
    return public, secret
