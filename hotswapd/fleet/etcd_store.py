"""etcd, as the fleet uses it: ranges with their revisions, compare-and-swap transactions,
leases, and a watch that rings a bell.

Built on ``etcd3gw`` (OpenStack's client for etcd's v3 JSON gateway: plain HTTP through
``requests``, no gRPC or protobuf pins), which gives TLS, the API path for the server's
version and typed errors; the ranges and transactions are sent in the gateway's own
shape so that revisions (the fleet's generations) come back. Every failure to reach etcd
becomes :class:`~hotswapd.errors.FleetUnavailable`; endpoints are tried in turn.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hotswapd.config.fleet_section import FleetConfig
from hotswapd.errors import ConfigError, FleetUnavailable

log = logging.getLogger(__name__)
REQUEST_SECONDS = 3.0
# A watch silent this long is opened again (etcd sends nothing on a quiet fleet; a frozen
# link looks the same, and the member polls meanwhile).
WATCH_SILENCE_SECONDS = 30.0
MAX_VALUE_BYTES = 1 << 20  # a fleet value is a small JSON object; anything larger is not ours


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    def json(self) -> dict[str, Any] | None:
        """The value as a JSON object, or None when it is not one (anything may write etcd)."""
        if len(self.value) > MAX_VALUE_BYTES:
            return None
        try:
            found = json.loads(self.value)
        except (ValueError, RecursionError):  # "[[[[..." 100 KB deep is short, and valid JSON's shape
            return None
        return found if isinstance(found, dict) else None


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def prefix_end(prefix: str) -> str:
    """The key just past every key that starts with ``prefix`` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


def record_bytes(value: dict[str, Any]) -> bytes:
    """A record as it is stored (what a compare on its value must match)."""
    return json.dumps(value, sort_keys=True).encode()


def put_op(key: str, value: dict[str, Any] | bytes, lease: int = 0) -> dict[str, Any]:
    body = value if isinstance(value, bytes) else record_bytes(value)
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(body)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete_op(key: str, *, prefix: bool = False) -> dict[str, Any]:
    request = {"key": _b64(key)}
    if prefix:
        request["range_end"] = _b64(prefix_end(key))
    return {"request_delete_range": request}


def mod_revision_is(key: str, revision: int) -> dict[str, Any]:
    """Compare: the key was last written at ``revision`` (0: it does not exist)."""
    if revision == 0:
        return {"key": _b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
    return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(revision)}


def value_is(key: str, value: bytes) -> dict[str, Any]:
    return {"key": _b64(key), "result": "EQUAL", "target": "VALUE", "value": _b64(value)}


def detail(exc: Exception) -> str:
    """What etcd said: the gateway's JSON ``message`` ("etcdserver: authentication failed,
    ..."), else the error's own text."""
    text = getattr(exc, "detail_text", None)
    if isinstance(text, str):
        try:
            found = json.loads(text)
        except ValueError:
            return text.strip()[:300] or str(exc)
        if isinstance(found, dict) and isinstance(found.get("message"), str):
            return found["message"]
    return str(exc) or type(exc).__name__


class EtcdStore:
    def __init__(self, config: FleetConfig, base_dir: Path | None) -> None:
        import etcd3gw  # the `fleet` extra

        self._etcd3gw = etcd3gw
        self._config = config
        self._clients = [self._client(url, base_dir) for url in config.etcd]
        self._current = 0
        self._lock = threading.Lock()
        self._password = self._read_password(base_dir)

    def _client(self, url: str, base_dir: Path | None) -> Any:
        parts = urlsplit(url)

        def path(name: str | None) -> str | None:
            if name is None:
                return None
            found = Path(name).expanduser()
            return str(found if found.is_absolute() or base_dir is None else base_dir / found)

        client = self._etcd3gw.Etcd3Client(
            host=parts.hostname, port=parts.port if parts.port is not None else 2379, protocol=parts.scheme, timeout=REQUEST_SECONDS,
            ca_cert=path(self._config.ca_file), cert_cert=path(self._config.cert_file), cert_key=path(self._config.key_file),
        )
        return client

    def _read_password(self, base_dir: Path | None) -> str | None:
        if self._config.password_file is None:
            return None
        from hotswapd.host.safefiles import read_regular

        file = Path(self._config.password_file).expanduser()
        file = file if file.is_absolute() or base_dir is None else base_dir / file
        try:
            if file.stat().st_mode & 0o077:
                raise ConfigError(f"fleet.password_file {file} is readable by others: chmod 600 it")
            return read_regular(file, 4096).decode().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"fleet.password_file {file}: {exc}") from exc

    @property
    def endpoint(self) -> str:
        return self._config.etcd[self._current]

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the gateway's ``path`` on the first endpoint that answers."""
        errors = self._etcd3gw.exceptions
        unreachable = (errors.ConnectionFailedError, errors.ConnectionTimeoutError)
        last: Exception | None = None
        for _ in range(len(self._clients)):
            with self._lock:
                index = self._current
            client = self._clients[index]
            try:
                if self._password is not None and "Authorization" not in client.session.headers:
                    self._authenticate(client)
                try:
                    return client.post(client.get_url(path), json=body)  # type: ignore[no-any-return]
                except errors.Etcd3Exception as exc:
                    if self._password is not None and "token" in detail(exc).lower():  # an expired token: once more
                        self._authenticate(client)
                        return client.post(client.get_url(path), json=body)  # type: ignore[no-any-return]
                    raise
            except unreachable as exc:
                last = exc
            except errors.Etcd3Exception as exc:
                said = detail(exc)
                if "unavailable" not in said.lower() and "leader" not in said.lower():
                    raise FleetUnavailable(f"etcd at {self._config.etcd[index]} refused {path}: {said[:300]}") from exc
                last = exc
            except ValueError as exc:  # not JSON: not an etcd gateway
                last = exc
            with self._lock:
                if self._current == index:
                    self._current = (index + 1) % len(self._clients)
        raise FleetUnavailable(f"etcd is unreachable ({', '.join(self._config.etcd)}): {str(last)[:300]}")

    def _authenticate(self, client: Any) -> None:
        client.session.headers.pop("Authorization", None)
        answer = client.post(client.get_url("/auth/authenticate"), json={"name": self._config.username, "password": self._password})
        client.session.headers["Authorization"] = answer["token"]

    def range(self, prefix: str) -> tuple[int, list[Entry]]:
        """(the store's revision, every key under ``prefix``)."""
        answer = self.call("/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        entries = [
            Entry(_unb64(kv["key"]).decode(errors="replace"), _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)), int(kv.get("create_revision", 0)), int(kv.get("lease", 0)))
            for kv in answer.get("kvs", [])
        ]
        return int(answer["header"]["revision"]), entries

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]] | None = None) -> tuple[bool, int]:
        """(whether every compare held and ``success`` ran, the store's revision after it)."""
        answer = self.call("/kv/txn", {"compare": compare, "success": success, "failure": failure or []})
        return bool(answer.get("succeeded", False)), int(answer["header"]["revision"])

    def put(self, key: str, value: dict[str, Any], lease: int = 0) -> int:
        return self.txn([], [put_op(key, value, lease)])[1]

    def delete(self, key: str, *, prefix: bool = False) -> None:
        self.txn([], [delete_op(key, prefix=prefix)])

    def grant(self, seconds: int) -> int:
        return int(self.call("/lease/grant", {"TTL": seconds, "ID": 0})["ID"])

    def keep_alive(self, lease: int) -> int:
        """Renew ``lease``; its TTL now (0 or less: it expired, and its keys are gone)."""
        answer = self.call("/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self.call("/lease/revoke", {"ID": str(lease)})

    def watch(self, prefix: str, ring: Callable[[], None], ended: Callable[[], None]) -> Callable[[], None]:
        """Call ``ring`` on every change under ``prefix``, from a thread of its own that also
        opens the stream (a link that accepts and never answers cannot hold the caller), and
        ``ended`` once when the watch stops: etcd went away, the stream was silent for
        WATCH_SILENCE_SECONDS (it is opened again: a frozen link is not waited on for ever),
        or it was cancelled. The caller reads the state itself, so a missed ring costs only
        latency. The gateway's streamed watch is read here rather than through etcd3gw's
        watcher, whose queue blocks forever when the stream ends. Returns the cancel."""
        with self._lock:
            client = self._clients[self._current]
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}
        opened: list[Any] = []
        cancelled = threading.Event()

        def pump() -> None:
            try:
                if self._password is not None and "Authorization" not in client.session.headers:
                    self._authenticate(client)
                response = client.session.post(client.get_url("/watch"), json=body, stream=True, timeout=(REQUEST_SECONDS, WATCH_SILENCE_SECONDS))
                opened.append(response)
                if cancelled.is_set() or response.status_code != 200:
                    return
                for chunk in response.iter_content(chunk_size=None):  # as it arrives
                    if chunk.strip():
                        ring()
            except Exception as exc:  # noqa: BLE001 -- the stream broke or went silent; the member watches again
                log.debug("fleet: the etcd watch ended: %s", exc)
            finally:
                for response in opened:
                    response.close()
                ended()

        def cancel() -> None:
            cancelled.set()
            for response in opened:
                response.close()

        threading.Thread(target=pump, name="fleet-watch", daemon=True).start()
        return cancel
