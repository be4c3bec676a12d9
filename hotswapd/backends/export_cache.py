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
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hotswapd.errors import ModelLoadError

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 1800.0


def created_once(root: Path, key: str, module: str, arguments: list[str], trust_remote_code: bool) -> dict[str, Any]:
    """The check of the cached conversion ``root/key``, or convert and check now (running
    ``python -m module *arguments --out STAGING``) and cache it. ``exported_now`` says which."""
    final = root / key
    if (final / "check.json").exists():
        cached = read_check(final)
        if cached is not None:
            log.info("reusing %s", final)
            return {**cached, "exported_now": False}
        log.warning("the cached conversion %s has an unusable check.json; converting again", final)
        shutil.rmtree(final, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", module, *arguments, "--out", str(staging)]
    if trust_remote_code:
        command.append("--trust-remote-code")
    log.info("creating %s (runs torch once in a subprocess)", final)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(f"the conversion ({module}) took over {TIMEOUT_SECONDS:.0f} s and was stopped") from exc
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelLoadError(f"the conversion ({module}) failed: {last}")
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another daemon placed the same conversion first
    for item in final.iterdir():
        item.chmod(0o444)
    fresh = read_check(final)
    if fresh is None:
        raise ModelLoadError(f"the conversion wrote an unusable {final / 'check.json'}")
    return {**fresh, "exported_now": True}


def read_check(directory: Path) -> dict[str, Any] | None:
    """The conversion's agreement check, or None if the file is not one (the cache is a
    directory on disk: anything may have written it)."""
    from hotswapd.safefiles import read_regular

    try:
        check = json.loads(read_regular(directory / "check.json", 1 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    numbers = ("mean_cosine", "min_cosine", "sample_size")
    if not isinstance(check, dict) or not all(isinstance(check.get(key), (int, float)) and not isinstance(check.get(key), bool) for key in numbers):
        return None
    return check


def enforce(check: dict[str, Any], threshold: float, what: str) -> None:
    if check["mean_cosine"] < threshold:
        raise ModelLoadError(
            f"{what} agrees with the torch model at mean cosine {check['mean_cosine']:.4f} "
            f"(min {check['min_cosine']:.4f}) on the {check['sample_size']}-text check sample, "
            f"below min_cosine {threshold}: refused"
        )
