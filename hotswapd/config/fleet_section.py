"""``[fleet]``: this daemon is one member of a fleet whose desired state lives in etcd.

Each member keeps its own models and versions in its own file; the fleet holds, per model,
the active version and the rollout, and a switch commits on every member together.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FLEET_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def host_member_name(hostname: str) -> str:
    """The host's short name as a member name: characters a key or a label cannot hold become "-"."""
    short = re.sub(r"[^A-Za-z0-9._-]", "-", hostname.split(".")[0])[:64].lstrip("._-")
    return short or "member"


class FleetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    # etcd's client URLs ("http://10.0.0.5:2379"); tried in turn when one does not answer.
    etcd: list[str] = Field(min_length=1, max_length=16)
    member: str = Field(default_factory=lambda: host_member_name(socket.gethostname()), validate_default=True)
    # TLS to etcd: files, never inline secrets.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # etcd authentication: the user, and a file holding the password (owner-only).
    username: str | None = None
    password_file: str | None = None
    # A member that stops renewing its lease for this long is no longer waited for.
    lease_seconds: int = Field(default=10, ge=2, le=300)
    # How long a switch waits for every member to load, warm and report ready, then serve.
    switch_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    # Fleet auto-rollback: a rollout is rolled back everywhere when more than this share of
    # live members report its target unhealthy (0: any one member).
    unhealthy_share: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("name", "member")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(FLEET_NAME, value):
            raise ValueError(f"{value[:80]!r} must match {FLEET_NAME}")
        return value

    @field_validator("etcd")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
                raise ValueError(f"etcd endpoint {url[:200]!r} must be http(s)://HOST:PORT (credentials go in username/password_file)")
            try:
                port = parts.port
            except ValueError as exc:
                raise ValueError(f"etcd endpoint {url[:200]!r}: {exc}") from None
            if port == 0:
                raise ValueError(f"etcd endpoint {url[:200]!r}: port 0 is no port")
        return urls

    @model_validator(mode="after")
    def _pairs(self) -> FleetConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        return self
