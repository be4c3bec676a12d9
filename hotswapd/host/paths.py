"""Where hotswap keeps things, and how a socket address is spelled.

Directories come from platformdirs so they follow the XDG spec on Linux and the native
conventions elsewhere. Every function computes its answer when called: nothing is read
from the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

from hotswapd.errors import ConfigError

APP_NAME = "hotswapd"
SOCKET_ENV = "HOTSWAPD_SOCKET"
CONFIG_ENV = "HOTSWAPD_CONFIG"
# sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS; ZeroMQ ipc:// obeys the same.
MAX_IPC_PATH_BYTES = 100


def _platformdirs():  # type: ignore[no-untyped-def]
    # Imported on first use: `hs --socket ...` never needs it, and `hs` start-up counts.
    import platformdirs

    return platformdirs


def runtime_dir() -> Path:
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp/runtime-UID;
        # that fallback is fine for us as long as the directory is owner-only (ensure_private_dir).
        warnings.simplefilter("ignore")
        return Path(_platformdirs().user_runtime_dir(APP_NAME))


def config_dir() -> Path:
    return Path(_platformdirs().user_config_dir(APP_NAME))


def state_dir() -> Path:
    return Path(_platformdirs().user_state_dir(APP_NAME))


def cache_dir() -> Path:
    return Path(_platformdirs().user_cache_dir(APP_NAME))


def default_config_path() -> Path:
    return config_dir() / "config.toml"


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """Flag beats environment beats the platform default."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen).expanduser() if chosen else default_config_path()


def default_endpoint() -> str:
    return "ipc://" + str(runtime_dir() / "hotswapd.sock")


def resolve_endpoint(explicit: str | None) -> str:
    """Flag beats environment beats the default ipc socket; the result is normalised."""
    return normalize_endpoint(explicit or os.environ.get(SOCKET_ENV) or default_endpoint())


def normalize_endpoint(value: str) -> str:
    """Turn ``ipc://PATH``, ``tcp://127.0.0.1:PORT`` or a bare path into a ZeroMQ endpoint.

    TCP is always CURVE-secured (only authorised client keys get in; see hotswapd.host.curve_keys),
    and accepted on loopback addresses only: CURVE authenticates and encrypts, but a daemon
    reachable from the network is more than this tool means to offer.
    """
    value = value.strip()
    if value.startswith("tcp://"):
        host, sep, port = value[len("tcp://") :].rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"socket {value!r}: expected tcp://127.0.0.1:PORT")
        if not _is_loopback(host.strip("[]")):
            raise ConfigError(
                f"socket {value!r}: only loopback TCP addresses are allowed "
                "(use an ipc socket or 127.0.0.1)"
            )
        return value
    path = value[len("ipc://") :] if value.startswith("ipc://") else value
    if "://" in path or not path:
        raise ConfigError(f"socket {value!r}: expected ipc://PATH, tcp://127.0.0.1:PORT or a path")
    absolute = os.path.abspath(os.path.expanduser(path))
    if len(absolute.encode()) > MAX_IPC_PATH_BYTES:
        raise ConfigError(
            f"socket path {absolute!r} is {len(absolute.encode())} bytes; Unix sockets allow about "
            f"{MAX_IPC_PATH_BYTES}: choose a shorter path"
        )
    return "ipc://" + absolute


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress  # only TCP endpoints need it

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ipc endpoint, or None for TCP."""
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


def lock_path(endpoint: str) -> Path:
    """The lock file that says which daemon owns an endpoint (it holds the pid)."""
    sock = ipc_path(endpoint)
    if sock is not None:
        return sock.with_name(sock.name + ".lock")
    port = endpoint.rpartition(":")[2]
    return runtime_dir() / f"tcp-{port}.lock"


def ensure_socket_dir(socket_path: Path) -> None:
    """Create the directory of an ipc socket, owner-only.

    Our own runtime directory is tightened to 0700 even if it already existed; a directory
    the user chose (say /tmp) is created 0700 when missing but never changed.
    """
    directory = socket_path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if directory == runtime_dir() and directory.stat().st_mode & 0o077:
        os.chmod(directory, 0o700)


def ensure_private_dir(directory: Path) -> str | None:
    """Create one of hotswap's own directories owner-only (0700), and tighten it if it
    exists with wider permissions (it may hold the audit log, state, cached vectors). None
    when done; else why not (a read-only or foreign directory): the caller carries on."""
    from hotswapd.host.safefiles import tighten

    try:
        # Missing ancestors are made owner-only too: XDG_RUNTIME_DIR created 0755 would be
        # refused by platformdirs later, and clients would look for the lock elsewhere.
        missing = [parent for parent in [directory, *directory.parents] if not parent.exists()]
        for parent in reversed(missing):
            parent.mkdir(mode=0o700, exist_ok=True)
        if tighten(directory, 0o700):  # never through a symlink
            import logging

            logging.getLogger("hotswapd").warning("tightened %s to 700: it holds hotswap's private files", directory)
    except OSError as exc:
        return f"{directory}: {exc.strerror or exc}"
    return None
