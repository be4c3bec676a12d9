"""Options every command shares, resolved once (flags > environment > defaults)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from hotswapd.client import DEFAULT_TIMEOUT, Client
from hotswapd.errors import DaemonNotRunning
from hotswapd.paths import resolve_endpoint

NO_AUTOSTART_ENV = "HOTSWAPD_NO_AUTOSTART"


@dataclass(frozen=True)
class Settings:
    socket: str | None = None
    config: str | None = None
    config_origin: str = "default"  # commandline | environment | default
    timeout: float = DEFAULT_TIMEOUT
    autostart: bool = True

    @property
    def endpoint(self) -> str:
        return resolve_endpoint(self.socket)

    def client(self) -> Client:
        """A client for the daemon, starting one first when none runs and autostart is on."""
        client = Client(self.socket, timeout=self.timeout)
        try:
            client.check_daemon()
        except DaemonNotRunning:
            if not self.autostart:
                raise
            from hotswapd.launcher import daemon_log_path, start_daemon

            print(f"hs: no daemon on {client.endpoint}; starting hotswapd (log: {daemon_log_path()})", file=sys.stderr)
            start_daemon(client.endpoint, self.config)
        return client


def autostart_default() -> bool:
    return os.environ.get(NO_AUTOSTART_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}
