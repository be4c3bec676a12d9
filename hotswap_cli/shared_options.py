"""Options every command shares, resolved once (flags > environment > defaults)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hotswapd.client.connection import DEFAULT_TIMEOUT, Client
from hotswapd.errors import DaemonNotRunning
from hotswapd.host.paths import resolve_endpoint

NO_AUTOSTART_ENV = "HOTSWAPD_NO_AUTOSTART"


# The clients this command made: closed on Ctrl-C, which withdraws what they still wait for
# (the daemon drops that work at once rather than at its deadline).
OPEN_CLIENTS: list[Client] = []


def close_clients() -> None:
    for client in OPEN_CLIENTS:
        try:
            client.close()
        except Exception:  # noqa: BLE001 -- leaving anyway; a close that fails changes nothing
            pass
    OPEN_CLIENTS.clear()


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

    def client(self, *, start: bool = True) -> Client:
        """A client for the daemon. When none runs, commands that need one (``start``) start
        it if autostart is on; read-only commands (status, models, history, metrics) never
        do: they say none is running, as ``systemctl status`` does (exit 3)."""
        client = Client(self.socket, timeout=self.timeout)
        OPEN_CLIENTS.append(client)
        try:
            client.check_daemon()
        except DaemonNotRunning:
            if not (start and self.autostart):
                raise
            from hotswapd.client.launcher import daemon_log_path, start_daemon

            print(f"hs: no daemon on {client.endpoint}; starting hotswapd (log: {daemon_log_path()})", file=sys.stderr)
            start_daemon(client.endpoint, self.config)
            return client
        if self.config_named:
            self.warn_if_other_config(client.status().get("config_path"))
        return client

    @property
    def config_named(self) -> bool:
        """--config or HOTSWAPD_CONFIG was given (not the platform default)."""
        return bool(self.config) and self.config_origin != "default"

    def warn_if_other_config(self, running: str | None) -> None:
        """--config names the config of a daemon this command starts; one already runs, maybe
        with another file (``running``). Say so rather than let the option be silently ignored."""
        if self.config and self.config_named:
            _warn_other_config(running, self.config)


def _warn_other_config(running: str | None, wanted: str) -> None:
    if running is None or Path(running).resolve() != Path(wanted).expanduser().resolve():
        print(
            f"hs: warning: the running daemon uses {running or 'the built-in default config'}, not {wanted}; "
            "--config applies to a daemon hs starts (restart it to change: hs daemon stop)",
            file=sys.stderr,
        )


def autostart_default() -> bool:
    return os.environ.get(NO_AUTOSTART_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}
