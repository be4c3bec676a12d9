"""systemd integration: the sd_notify protocol and a hardened user unit file.

sd_notify is a datagram to the socket named by NOTIFY_SOCKET (a leading '@' means the
abstract namespace). It is a few lines with the standard library, which keeps libsystemd
out of our dependencies.

The unit is written for the per-user manager (``systemctl --user``) of systemd 252 and
later, and scores at most 4.0 ("OK") in ``systemd-analyze security --user``. This module
imports only the standard library and :mod:`hotswapd.host.paths`: the daemon imports it for
``notify`` and ``hs`` for the unit.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hotswapd.host import paths
from hotswapd.errors import HotswapError

UNIT_NAME = "hotswapd.service"
MAX_UNIT_BYTES = 256 * 1024
# Device nodes of the GPU drivers torch and onnxruntime use (NVIDIA, AMD ROCm): a private
# /dev would hide them, and device = "auto" would quietly fall back to the CPU.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd")
# Characters a path in a unit file cannot carry through systemd's unquoting reliably.
_UNSAFE = ('"', "\\", "\n", "\r")

InstallOutcome = Literal["written", "unchanged", "replaced"]


class UnitError(HotswapError):
    """The unit cannot be written as asked (never sent over the wire: a CLI-side error)."""

    code = "unit_error"


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
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is invalid and ignored
        base = str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def user_unit_path() -> Path:
    return user_unit_dir() / UNIT_NAME


@dataclass(frozen=True)
class UnitSpec:
    """What differs between installations; the rest of the unit is fixed.

    ``state_dir`` and ``cache_dir`` are absolute, as ``hs`` sees them now, and are handed to
    the daemon through XDG_STATE_HOME / XDG_CACHE_HOME, so the daemon's platformdirs name
    exactly the directories the sandbox leaves writable (``StateDirectory=``/``%S`` cannot
    be used: systemd before v254 maps them to ~/.config for user units).
    """

    command: tuple[str, ...]
    state_dir: Path
    cache_dir: Path
    socket_dir: Path | None = None  # the directory of an explicitly chosen ipc socket
    gpu: bool = False


def daemon_command(executable: Sequence[str], socket_spec: str | None, config: str | None) -> tuple[str, ...]:
    """``hotswapd`` and its arguments, every path absolute (a unit has no useful cwd).

    With no config named, the platform default is passed when it exists, so the daemon
    reads the file ``hs config path`` shows even if the user manager's XDG_CONFIG_HOME
    differs from the shell's; when it does not exist, ``--config`` is left out, because a
    named file must exist and the daemon then serves its built-in default and picks the
    default file up once it is written.
    """
    args = list(executable)
    if socket_spec:
        args += ["--socket", paths.normalize_endpoint(socket_spec)]
    chosen = config  # the caller resolved flag > environment already (hs: Settings)
    if chosen and chosen.startswith("ssm:"):
        args += ["--config", chosen]
    elif chosen:
        args += ["--config", os.path.abspath(os.path.expanduser(chosen))]
    elif paths.default_config_path().is_file():
        args += ["--config", str(paths.default_config_path().absolute())]
    return tuple(args)


def unit_spec(executable: Sequence[str], socket_spec: str | None, config: str | None) -> UnitSpec:
    command = daemon_command(executable, socket_spec, config)
    socket_dir = None
    if socket_spec:
        socket_path = paths.ipc_path(paths.normalize_endpoint(socket_spec))
        socket_dir = socket_path.parent if socket_path else None
    return UnitSpec(
        command=command,
        state_dir=paths.state_dir().absolute(),
        cache_dir=paths.cache_dir().absolute(),
        socket_dir=socket_dir,
        gpu=any(os.path.exists(node) for node in GPU_DEVICE_NODES),
    )


def _word(value: str, *, exec_line: bool = False) -> str:
    """One word of a unit setting: specifiers (and, on Exec lines, variables) escaped, and
    double-quoted when it holds whitespace."""
    if any(char in value for char in _UNSAFE):
        raise UnitError(f"{value!r}: quotes, backslashes and line breaks cannot go into a unit file; choose another path")
    value = value.replace("%", "%%")
    if exec_line:
        value = value.replace("$", "$$")
    return f'"{value}"' if any(char.isspace() for char in value) else value


def _words(values: Sequence[str], *, exec_line: bool = False) -> str:
    return " ".join(_word(value, exec_line=exec_line) for value in values)


def _in_tmp(directory: Path) -> bool:
    return any(directory == tmp or directory.is_relative_to(tmp) for tmp in (Path("/tmp"), Path("/var/tmp")))


def _sandbox(spec: UnitSpec) -> list[str]:
    """The hardening lines. Each one costs the daemon nothing it uses; the comments say what
    was left out and why."""
    writable = [str(spec.state_dir), str(spec.cache_dir)]
    if spec.socket_dir is not None:
        writable.append(str(spec.socket_dir))
    private_tmp = spec.socket_dir is None or not _in_tmp(spec.socket_dir)
    lines = [
        "# -- sandbox: `systemd-analyze security --user hotswapd.service` ---------------------",
        "# The daemon writes only its state and cache directories and its socket directory.",
        "# `+`: created outside the sandbox, before it is set up (ReadWritePaths= needs them).",
        f"ExecStartPre=+/bin/mkdir -p -m 0700 {_words(writable, exec_line=True)}",
        "RuntimeDirectory=hotswapd",
        "RuntimeDirectoryMode=0700",
        "# Sockets of other hotswapd processes (`hs daemon start`) may live there too.",
        "RuntimeDirectoryPreserve=yes",
        f"Environment={_word(f'XDG_STATE_HOME={spec.state_dir.parent}')} {_word(f'XDG_CACHE_HOME={spec.cache_dir.parent}')}",
        f"ReadWritePaths={_words(writable)} %t/hotswapd",
        "ProtectSystem=strict",
        "# Configs, model directories and the Hugging Face cache may live in home: read-only.",
        "ProtectHome=read-only",
        # PrivateUsers= is what makes the namespacing settings work in a user manager at all
        # (systemd.exec(5)); files of other users then show up as owned by "nobody".
        "PrivateUsers=yes",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RestrictNamespaces=yes",
        "PrivateMounts=yes",
        "ProtectHostname=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "# ipc:// sockets; TCP for a loopback endpoint, metrics, S3, SSM and SageMaker.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "# @resources stays allowed: OpenMP and oneDNN pin their threads (sched_setaffinity).",
        "# A refused call fails with EPERM instead of killing the daemon mid-request.",
        "SystemCallErrorNumber=EPERM",
        "# Not set: MemoryDenyWriteExecute= (torch's oneDNN generates its kernels at run time:",
        "# every torch model failed with \"could not create a primitive\" under it, measured),",
        "# ProtectProc=/ProcSubset= (system services only; psutil reads /proc/meminfo),",
        "# IPAddressDeny= and PrivateNetwork= (s3://, ssm: and SageMaker need the network).",
    ]
    if private_tmp:
        lines.append("PrivateTmp=yes")
    else:
        lines.append("# No PrivateTmp=: the socket is under /tmp, and a private /tmp would hide it from clients.")
    if spec.gpu:
        lines.append("# No PrivateDevices= or ProtectClock= (its DeviceAllow= closes the device policy): a GPU is present.")
    else:
        lines += ["PrivateDevices=yes", "ProtectClock=yes"]
    return lines


def unit_text(spec: UnitSpec) -> str:
    service = [
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_words(spec.command, exec_line=True)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "# hotswapd never downloads models at run time.",
        "Environment=HF_HUB_OFFLINE=1",
        "Restart=on-failure",
        "RestartSec=2",
        "# SIGTERM drains requests in flight before exit.",
        "TimeoutStopSec=60",
        "",
        *_sandbox(spec),
    ]
    return (
        "[Unit]\n"
        "Description=hotswap embedding daemon (hotswapd)\n"
        "Documentation=https://pypi.org/project/hotswap/\n"
        "\n[Service]\n" + "\n".join(service) + "\n"
        "\n[Install]\n"
        "WantedBy=default.target\n"
    )


def installed_unit(target: Path | None = None) -> str | None:
    """The text of the installed unit, or None when there is none."""
    from hotswapd.host.safefiles import read_regular

    try:
        return read_regular(target or user_unit_path(), MAX_UNIT_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UnitError(f"cannot read {target or user_unit_path()}: {exc}") from exc


def install_unit(text: str, *, force: bool = False, target: Path | None = None) -> InstallOutcome:
    """Write the unit; an existing one with other content is replaced only with ``force``."""
    target = target or user_unit_path()
    current = installed_unit(target)
    if current == text:
        return "unchanged"
    if current is not None and not force:
        raise UnitError(
            f"{target} exists with different content; see the difference with `hs daemon unit | diff {target} -`, "
            "replace it with `hs daemon unit --install --force`"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed: a crash never leaves systemd half a unit.
        fd, temp = tempfile.mkstemp(prefix=".hotswapd-", suffix=".service", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as exc:
        raise UnitError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return "written" if current is None else "replaced"
