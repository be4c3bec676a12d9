"""Reading files that anyone may have replaced: only regular files, never more than a bound;
and writing files so that a crash leaves the old one or the new one, never half of one.

A FIFO, a device (/dev/zero) or a socket where a config, state, audit or key file should be
would block a read forever or fill memory. Opening with O_NONBLOCK never blocks on a FIFO,
and the file's type is checked on the open descriptor, so the check and the read are about
the same file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotRegularFile(OSError):
    """The path exists but is not a regular file (a directory, FIFO, device or socket)."""


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; NotRegularFile for anything but a regular file, ValueError past
    ``max_bytes``; FileNotFoundError and other OSErrors as they come."""
    fd, info = _open_regular(path)
    try:
        if info.st_size > max_bytes:
            raise ValueError(f"{path} is {info.st_size} bytes; more than {max_bytes} is not one of ours")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise ValueError(f"{path} grew past {max_bytes} bytes while read")
        return data
    finally:
        os.close(fd)


def read_tail(path: Path, max_bytes: int) -> tuple[bytes, bool]:
    """The file's last ``max_bytes`` (a log that may have grown past what is worth reading),
    and whether that is less than the whole; NotRegularFile as :func:`read_regular`."""
    fd, info = _open_regular(path)
    try:
        start = max(0, info.st_size - max_bytes)
        return os.pread(fd, max_bytes, start), start > 0
    finally:
        os.close(fd)


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """An open descriptor of ``path`` and its stat, if it is a regular file: O_NONBLOCK, so a
    FIFO does not block the open, and the type checked on the descriptor itself."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def is_regular(path: Path) -> bool:
    """A regular file (following links), without ever opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def tighten(path: Path, mode: int) -> bool:
    """chmod ``path`` to ``mode`` if it is our own regular file or directory, never through a
    symbolic link (as root, a link could point at /dev/zero or a system file). True if changed."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode) or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return False
    if info.st_uid != os.geteuid() or not info.st_mode & 0o077:
        return False
    os.chmod(path, mode)
    return True


def write_atomically(path: Path, data: bytes) -> None:
    """Written beside, synced, renamed over, the directory synced: all of it or none."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)  # a full disk, a directory in the way: leave nothing behind
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a power cut."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
