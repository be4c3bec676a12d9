"""The checks of ``hs doctor`` about this machine's hotswap files: the daemon's socket,
hotswap's directories and the systemd unit.

Every check only looks: no daemon is started, no directory created, no file written.
Imported inside the ``doctor`` command only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hotswapd.host import paths
from hotswapd.client.connection import Client
from hotswapd.errors import DaemonError, DaemonTimeout, HotswapError
from hotswapd.host.lockfile import holder_pid

from hotswap_cli.shared_options import Settings

Status = Literal["ok", "warn", "fail"]
PING_SECONDS = 2.0  # a daemon answers ping on its socket thread, even when its workers are busy
RESTART = "hs daemon stop, then hs daemon start"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``fix`` says what to do, for a warn or a fail."""

    check: str
    status: Status
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """One line, for a pipe (grep, a script)."""
        text = f"{self.status:<4} {self.check:<7} {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text

    def wrapped(self, width: int) -> str:
        """For a terminal ``width`` wide: the detail folded under itself, the fix on a line of
        its own; a path or a URL is never broken inside."""
        import textwrap

        lead = f"{self.status:<4} {self.check:<7} "
        indent = " " * len(lead)
        fold = textwrap.TextWrapper(width=max(width, len(lead) + 20), initial_indent=lead, subsequent_indent=indent,
                                    break_long_words=False, break_on_hyphens=False)
        lines = fold.wrap(self.detail) or [lead.rstrip()]  # an empty detail still shows its status
        if self.fix:
            fold.initial_indent = indent + "fix: "
            fold.subsequent_indent = indent + "     "
            lines += fold.wrap(self.fix)
        return "\n".join(lines)


def socket_checks(settings: Settings) -> list[Check]:
    """Is a daemon serving the endpoint, is its socket ours and private, does it answer?"""
    endpoint = settings.endpoint  # ConfigError for a bad spelling: the caller reports it
    lock = paths.lock_path(endpoint)
    socket_path = paths.ipc_path(endpoint)
    pid = holder_pid(lock)
    if pid is None:
        if socket_path is not None and os.path.lexists(socket_path) and not _is_socket(socket_path):
            return [Check("socket", "fail", f"no hotswapd is running on {endpoint}, and {socket_path} is not a socket: "
                          "the daemon will not replace it", f"move {socket_path} away, or choose another --socket")]
        if socket_path is not None and os.path.lexists(socket_path):
            return [Check("socket", "warn", f"no hotswapd is running on {endpoint}; {socket_path} is a stale socket file "
                          f"(no process holds {lock})", "hs daemon start (it replaces the stale file)")]
        return [Check("socket", "warn", f"no hotswapd is running on {endpoint}",
                      "hs daemon start (or systemctl --user start hotswapd)")]
    rows = _socket_file(socket_path, pid) if socket_path is not None else []
    if any(row.status == "fail" for row in rows):
        return rows
    return [*rows, _ping(endpoint, pid)]


def _socket_file(path: Path, pid: int) -> list[Check]:
    who = f"pid {pid}" if pid > 0 else "a process"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return [Check("socket", "fail", f"hotswapd ({who}) holds the endpoint but its socket file {path} is missing", RESTART)]
    if not stat.S_ISSOCK(info.st_mode):
        return [Check("socket", "fail", f"{path} is not a socket", f"remove it, then {RESTART}")]
    if info.st_uid != os.geteuid():
        return [Check("socket", "fail", f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}): another user's daemon",
                      "use a socket of your own (--socket or HOTSWAPD_SOCKET)")]
    # connect() needs write permission on the socket and search permission on its directory.
    directory = os.stat(path.parent).st_mode
    mode = stat.S_IMODE(info.st_mode)
    if (mode & 0o002 and directory & 0o001) or (mode & 0o020 and directory & 0o010):
        return [Check("socket", "warn", f"{path} (mode {mode:o}) in {path.parent} (mode {stat.S_IMODE(directory):o}): "
                      "other local users can connect", f"chmod 700 {path.parent}")]
    return [Check("socket", "ok", f"{path} is yours and private (mode {mode:o})")]


def _ping(endpoint: str, pid: int) -> Check:
    who = f"pid {pid}" if pid > 0 else "a process"
    try:
        with Client(endpoint, timeout=PING_SECONDS) as client:
            reply = client.ping(timeout=PING_SECONDS)
    except DaemonTimeout:
        return Check("socket", "warn", f"hotswapd ({who}) holds {endpoint} but did not answer ping within {PING_SECONDS:g} s: "
                     "busy or hung", f"hs daemon status; if it stays silent: {RESTART}")
    except DaemonError as exc:
        return Check("socket", "fail", exc.message, RESTART)
    except HotswapError as exc:  # a TCP endpoint without CURVE keys, a daemon of another wire version
        return Check("socket", "fail", exc.message, "hs keys init (TCP), or upgrade hs and hotswapd together")
    phase = reply.get("phase", "ready")
    status: Status = "ok" if phase == "ready" else "warn"
    fix = None if status == "ok" else "wait for it, or see hs daemon status"
    return Check("socket", status, f"hotswapd (pid {reply.get('pid', pid)}) answers on {endpoint} ({phase})", fix)


def dir_checks(settings: Settings) -> list[Check]:
    """hotswap's own directories writable and owner-only; a chosen socket directory writable."""
    rows = [
        _dir_check("state", paths.state_dir(), own=True),
        _dir_check("cache", paths.cache_dir(), own=True),
        _dir_check("runtime", paths.runtime_dir(), own=True),
    ]
    try:
        socket_path = paths.ipc_path(settings.endpoint)
    except HotswapError:  # a misspelt endpoint: the socket check reports it
        return rows
    if socket_path is not None and socket_path.parent != paths.runtime_dir():
        rows.append(_dir_check("socket", socket_path.parent, own=False))
    return rows


# Where each directory comes from, for a fix that moves it.
_MOVE_WITH = {"state": "XDG_STATE_HOME", "cache": "XDG_CACHE_HOME", "runtime": "XDG_RUNTIME_DIR", "socket": "--socket"}


def _dir_check(label: str, directory: Path, *, own: bool) -> Check:
    name = f"{label} dir {directory}"
    elsewhere = f"point {_MOVE_WITH[label]} at a writable place"
    if not directory.exists():
        parent = next(p for p in directory.parents if p.exists())
        if os.access(parent, os.W_OK | os.X_OK):
            return Check("dir", "ok", f"{name} does not exist yet; it will be created (in {parent}, writable)")
        return Check("dir", "fail", f"{name} cannot be created: {parent} is not writable",
                     f"mkdir -p -m 700 {directory} as a user who may, or {elsewhere}")
    if not directory.is_dir():
        return Check("dir", "fail", f"{name} is not a directory", f"move it away: mv {directory} {directory}.bak")
    # access(2) also answers EROFS for a read-only file system: no probe file needs writing.
    if not os.access(directory, os.W_OK | os.X_OK):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return Check("dir", "fail", f"{name} is on a read-only file system", elsewhere)
        return Check("dir", "fail", f"{name} is not writable", f"chown {_user()} {directory} && chmod 700 {directory}")
    mode = stat.S_IMODE(directory.stat().st_mode)
    if own and mode & 0o077:
        return Check("dir", "warn", f"{name} is mode {mode:o}: other users can look into what it holds",
                     f"chmod 700 {directory} (the daemon tightens it when it starts)")
    return Check("dir", "ok", f"{name} is writable" + (" and owner-only" if own else ""))


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        return str(os.getuid())


def unit_checks(settings: Settings) -> list[Check]:
    """The installed user unit against what ``hs daemon unit`` would write now."""
    from hotswapd.host.systemd import installed_unit, user_unit_path

    from hotswap_cli.daemon import current_unit

    target = user_unit_path()
    installed = installed_unit(target)
    if installed is None:
        return [Check("unit", "ok", f"no systemd user unit at {target} (optional: hs daemon unit --install)")]
    rows = [_compare_unit(target, installed, current_unit(settings))]
    if settings.socket is None and not os.environ.get("XDG_RUNTIME_DIR"):
        # Under systemd the daemon's default socket is in $XDG_RUNTIME_DIR (/run/user/UID);
        # without it, hs looks in platformdirs' /tmp fallback and never finds that daemon.
        rows.append(Check("unit", "warn", f"XDG_RUNTIME_DIR is unset here: hs looks for the daemon in {paths.runtime_dir()}, "
                          f"the unit's daemon listens in /run/user/{os.getuid()}/hotswapd",
                          "run hs in a login session, or give hs and `hs daemon unit` the same --socket"))
    return rows


def _compare_unit(target: Path, installed: str, expected: str) -> Check:
    if installed == expected:
        return Check("unit", "ok", f"{target} matches what `hs daemon unit` writes now")
    ours, theirs = expected.splitlines(), installed.splitlines()
    index = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    was = theirs[index] if index < len(theirs) else "(end of file)"
    now = ours[index] if index < len(ours) else "(end of file)"
    return Check("unit", "warn", f"{target} differs from what `hs daemon unit` writes now (line {index + 1}: {was!r}, now {now!r})",
                 "hs daemon unit --install --force && systemctl --user daemon-reload && systemctl --user restart hotswapd")


def _is_socket(path: Path) -> bool:
    return not path.is_symlink() and stat.S_ISSOCK(path.lstat().st_mode)
