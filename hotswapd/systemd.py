"""systemd integration: the sd_notify protocol and a user unit file.

sd_notify is a datagram to the socket named by NOTIFY_SOCKET (a leading '@' means the
abstract namespace). It is a few lines with the standard library, which keeps libsystemd
out of our dependencies.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def notify(message: str) -> bool:
    """Send ``message`` (e.g. "READY=1") to systemd; False when not run under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_text(exec_start: str) -> str:
    return f"""[Unit]
Description=hotswap embedding daemon (hotswapd)
Documentation=https://pypi.org/project/hotswap/

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
# hotswapd never downloads models at run time.
Environment=HF_HUB_OFFLINE=1
Restart=on-failure
RestartSec=2
# SIGTERM drains requests in flight before exit.
TimeoutStopSec=60

[Install]
WantedBy=default.target
"""
