"""API keys for the HTTP endpoint: read at start and at every reload (a key removed from
the file is refused from the reload on), compared in constant time. ``hs config validate``
runs the same checks as the daemon.

Keys come from an owner-only file (one per line; ``#`` comments) or an environment
variable (comma- or newline-separated). A file other users can read is refused, as ssh
refuses a private key with loose permissions.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from hotswapd.errors import ConfigError
from hotswapd.config.http_section import HttpConfig
from hotswapd.host.safefiles import read_regular

MAX_KEYS_BYTES = 1 << 20
MIN_KEY_CHARS = 16


def load_keys(settings: HttpConfig, base_dir: Path) -> list[bytes]:
    keys: list[str] = []
    if settings.api_keys_file:
        path = (base_dir / settings.api_keys_file).expanduser()
        try:
            mode = path.stat().st_mode
            text = read_regular(path, MAX_KEYS_BYTES).decode("utf-8")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"http.api_keys_file {path}: {exc}") from exc
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigError(f"http.api_keys_file {path} is readable by other users (mode {stat.S_IMODE(mode):o}): chmod 600 {path}")
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if settings.api_keys_env:
        value = os.environ.get(settings.api_keys_env, "")
        if not value.strip():
            raise ConfigError(f"http.api_keys_env names {settings.api_keys_env}, which is unset or empty")
        keys += [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]
    if (settings.api_keys_file or settings.api_keys_env) and not keys:
        raise ConfigError("http: the API key sources name no key")
    short = [key for key in keys if len(key) < MIN_KEY_CHARS]
    if short:
        raise ConfigError(f"http: an API key must be at least {MIN_KEY_CHARS} characters ({len(short)} shorter)")
    return [key.encode() for key in keys]


class KeyRing:
    """The keys in force: replaced whole by a reload (one attribute swap, read per request)."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys


def authorised(header: str | None, keys: list[bytes]) -> bool:
    """``Authorization: Bearer KEY`` against every key, each compared in constant time."""
    if not keys:
        return True
    scheme, _, credentials = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 7235)
        return False
    given = credentials.strip().encode()
    found = False
    for key in keys:  # no early exit: the time does not tell which key matched
        found |= hmac.compare_digest(given, key)
    return found
