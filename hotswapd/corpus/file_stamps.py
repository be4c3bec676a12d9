"""What a corpus's files are on disk (device, inode, size, modification time), to tell a
corpus replaced under the daemon from one overwritten in place.

- A directory is stamped by its identity only: its own mtime moves with every file
  written in it.
- A directory without ``manifest.json`` is not a corpus yet (a build is writing it, or
  one was cut short): only the directory and the missing manifest are stamped, so the
  files a build appends to change nothing until the manifest, written last, appears.
"""

from __future__ import annotations

import os
from pathlib import Path

from hotswapd.corpus.ann import ANN, ANN_FACTS
from hotswapd.corpus.compact_index import COMPACT, INT8_RANGES
from hotswapd.corpus.files import MANIFEST, MATRIX, OFFSETS, ROWS

FileStamp = tuple[int, int, int, int]  # device, inode, size, mtime ns (size and time 0: a directory)
# (path, its stamp or None when missing or unreadable), in a fixed order.
Stamp = tuple[tuple[str, "FileStamp | None"], ...]
CORE_FILES = (MANIFEST, MATRIX, ROWS, OFFSETS)  # changed in place under a served corpus: refused


def corpus_stamp(where: Path) -> Stamp:
    """A corpus directory's stamp (or a bare ``.npy`` matrix's)."""
    head = stamps([where, where / MANIFEST])
    if head[1][1] is None:  # no manifest: not a corpus (yet); a bare matrix is its own first entry
        return head
    return head + stamps([where / name for name in (MATRIX, ROWS, OFFSETS, ANN, ANN_FACTS, *COMPACT.values(), INT8_RANGES)])


def stamps(paths: list[Path]) -> Stamp:
    return tuple((str(path), file_stamp(path)) for path in paths)


def file_stamp(path: Path) -> FileStamp | None:
    try:
        facts = os.stat(path)
    except (OSError, ValueError):  # missing, unreadable, a name too long, a symlink loop
        return None
    if os.path.isdir(path):
        return facts.st_dev, facts.st_ino, 0, 0
    return facts.st_dev, facts.st_ino, facts.st_size, facts.st_mtime_ns


def changed_in_place(before: Stamp, now: Stamp, served: Path | None) -> str | None:
    """The first file of the corpus being served (at ``served``) that is the same file as
    when it was opened with other contents: overwritten in place. None when nothing is
    served from these files, or when something was renamed into place instead (a
    directory replaced whole is a replacement, whatever its files look like)."""
    if served is None:
        return None
    earlier = dict(before)
    if any(earlier.get(path) != facts and _is_directory(facts, earlier.get(path)) for path, facts in now):
        return None
    served_text = str(served)
    for path, facts in now:
        was = earlier.get(path)
        ours = path == served_text or Path(path).parent == served
        if ours and (path == served_text or Path(path).name in CORE_FILES) and was is not None and facts is not None and was[:2] == facts[:2] and was != facts:
            return path
    return None


def replaced(before: Stamp, now: Stamp) -> bool:
    """Whether something was renamed into place: a file or directory that is another one than
    before, or a directory made or removed. A file that merely appeared (an ANN index built
    since) or changed in place is not a replacement."""
    earlier = dict(before)
    for path, facts in now:
        was = earlier.get(path)
        if was is not None and facts is not None and was[:2] != facts[:2]:
            return True
        if was != facts and _is_directory(facts, was):
            return True
    return False


def _is_directory(facts: FileStamp | None, was: FileStamp | None) -> bool:
    """A directory entry (size and time 0 in its stamp) that is another one now, or gone, or new."""
    return (facts is not None and facts[2:] == (0, 0)) or (was is not None and was[2:] == (0, 0))
