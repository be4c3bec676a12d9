"""``[http]``: where the OpenAI-compatible endpoint listens, who may call it, its bounds."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator


class HttpConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # HOST:PORT ("127.0.0.1:8080", "[::1]:8080"; port 0: any free one, see `hs status`);
    # off when unset (or `hotswapd --http`).
    listen: str | None = None
    # API keys, one per line, in an owner-only file; or in an environment variable (comma-
    # or newline-separated). With keys, every request needs `Authorization: Bearer KEY`; a
    # non-loopback address is refused without them.
    api_keys_file: str | None = None
    api_keys_env: str | None = None
    # HTTP requests waiting for their answer; past it, 429 with Retry-After (never unbounded memory).
    max_pending: PositiveInt = 512
    max_body_mb: float = Field(default=32.0, gt=0, le=1024)
    timeout_seconds: float = Field(default=60.0, gt=0, le=86400)
    # A client has this long to send a request (its head, then its body): a slow or silent
    # connection is closed (head) or answered 408 (body) instead of holding a descriptor.
    read_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    # Open connections at once; past it, a new one is closed on accept.
    max_connections: PositiveInt = 1024
    # The header a caller's sticky key comes in: during a rollout, one key, one version.
    sticky_header: str = "X-Hotswap-Key"
    # Web pages (origins, "https://app.example.com") whose scripts may call the endpoint; a
    # request a browser sends from any other page (it has an Origin header) is refused 403.
    cors_origins: list[str] = []
    # Names this endpoint is reached by, beyond its listen address and, on loopback,
    # localhost/127.0.0.1/[::1]: any other Host header is refused 421 (DNS rebinding).
    allowed_hosts: list[str] = []

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            scheme, sep, rest = origin.partition("://")
            if origin != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
                raise ValueError(f"{origin!r}: an origin is SCHEME://HOST[:PORT] (http or https, no path), or \"*\"")
        return value

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @model_validator(mode="after")
    def _keys_off_loopback(self) -> HttpConfig:
        if self.listen and not is_loopback(parse_listen(self.listen)[0]) and not (self.api_keys_file or self.api_keys_env):
            raise ValueError(
                f"listen = {self.listen!r} is reachable from other machines: set api_keys_file or api_keys_env "
                "(or listen on 127.0.0.1)"
            )
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); an IPv6 host in brackets."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r}: expected HOST:PORT with a port in 0..65535 (0: any free one), e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
