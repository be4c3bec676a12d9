"""Converted models made once, in a subprocess, and cached with their accuracy check.

The ONNX and OpenVINO backends turn a model directory into a graph (and may quantise it)
by running a converter module (``python -m MODULE ... --out DIR``) that needs torch, so
the daemon that serves the graph never imports it. The converter writes the graph and
``check.json``: the mean and minimum cosine of the graph's vectors against
sentence-transformers on the fixed check sample. The result lives under the cache
directory, named by a key of everything that decides it; a later load reuses it, and a
check under the version's ``min_cosine`` refuses it with the figures.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from hotswapd.host import load_steps
from hotswapd.host import children
from hotswapd.errors import ModelLoadError

log = logging.getLogger(__name__)
# The ONNX opset every exporter here writes (part of each export cache key).
OPSET = 17
TIMEOUT_SECONDS = 1800.0


def created_once(root: Path, key: str, module: str, arguments: list[str], trust_remote_code: bool, files: tuple[str, ...], kind: str = "vectors") -> dict[str, Any]:
    """The check of the cached conversion ``root/key``, or convert and check now (running
    ``python -m module *arguments --out STAGING``) and cache it. ``files`` are what the
    conversion must have written (regular files: a FIFO there would hang the runtime that
    reads it). ``kind``: what the check must hold ("vectors": cosines; "ranks": a
    cross-encoder's Spearman), so that a check of the other kind is converted again, not
    trusted. ``exported_now`` says which."""
    final = root / key
    cached = _usable(final, files, kind)
    if cached is not None:
        log.info("reusing %s", final)
        return {**cached, "exported_now": False}
    if final.is_symlink() or final.exists():
        log.warning("the cached conversion %s is unusable (a check.json or a file missing or not a file); converting again", final)
        _remove(final)
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root, key)
    staging = root / f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique: two loads of one key may overlap
    command = [sys.executable, "-m", module, *arguments, "--out", str(staging)]
    if trust_remote_code:
        command.append("--trust-remote-code")
    log.info("creating %s (runs torch once in a subprocess)", final)
    load_steps.report("converting (once; cached after)")
    try:
        with load_steps.watch_step_file(staging, load_steps.current()):  # the child names its steps there
            done = children.run(command, TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"the conversion ({module}) took over {TIMEOUT_SECONDS:.0f} s and was stopped") from exc
    except children.Stopped as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"the conversion ({module}) was stopped: the daemon is stopping") from exc
    except BaseException:  # SystemExit from SIGTERM in a measuring child: leave no staging behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"the conversion ({module}) failed: {children.failure(done)}")
    try:
        (staging / load_steps.STEP_FILE).unlink(missing_ok=True)  # a label, not part of the result
        staging.rename(final)
        for item in final.iterdir():  # only what this process made and placed: never through a link
            item.chmod(0o444)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another load placed the same conversion first
    fresh = _usable(final, files, kind)
    if fresh is None:
        raise ModelLoadError(f"the conversion left no usable result in {final}")
    load_steps.report("loading")
    return {**fresh, "exported_now": True}


def _usable(final: Path, files: tuple[str, ...], kind: str) -> dict[str, Any] | None:
    """The check of a complete conversion in ``final`` (a real directory, not a link), or None."""
    if final.is_symlink() or not final.is_dir():
        return None
    if not all(_regular(final / name) for name in files):
        return None
    return read_check(final, kind)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned(root: Path, key: str) -> None:
    """Staging directories of conversions whose process is gone (killed mid-conversion)."""
    for staging in root.glob(f"{key}.tmp-*"):
        pid = staging.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(staging)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CHECK_FIELDS = {"vectors": ("mean_cosine", "min_cosine", "sample_size"), "ranks": ("spearman_min", "spearman_mean", "queries")}


def read_check(directory: Path, kind: str = "vectors") -> dict[str, Any] | None:
    """The conversion's agreement check of ``kind`` (an embedder's cosines, a cross-encoder's
    ranks), or None if the file is not one (the cache is a directory on disk: anything may
    have written it, a check of the other kind included)."""
    from hotswapd.host.safefiles import read_regular

    try:
        check = json.loads(read_regular(directory / "check.json", 1 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(check, dict):
        return None
    if not all(_finite_number(check.get(key)) for key in CHECK_FIELDS[kind]):
        return None
    return check


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def enforce(check: dict[str, Any], threshold: float, what: str) -> None:
    if not check["mean_cosine"] >= threshold:  # NaN refuses too
        raise ModelLoadError(
            f"{what} agrees with the torch model at mean cosine {check['mean_cosine']:.4f} "
            f"(min {check['min_cosine']:.4f}) on the {check['sample_size']}-text check sample, "
            f"below min_cosine {threshold}: refused"
        )
