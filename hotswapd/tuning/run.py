"""The fastest accurate path for a version on this machine: the cached choice, or measure now.

Measuring runs :mod:`hotswapd.tuning.measure` in a subprocess (it imports torch and loads
every candidate); the daemon that then serves an ONNX or OpenVINO path never imports torch.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotswapd.host import children
from hotswapd.host.cpu import cpu_identity
from hotswapd.errors import ModelLoadError
from hotswapd.tuning.run_paths import GATES, PATHS, REFERENCE, RERANK_PATHS, paths_for
from hotswapd.tuning.tune_record import AGREEMENT, PathRow, TuneRecord, cache_key, eligible, library_versions, read_cached, write_cached

if TYPE_CHECKING:
    from hotswapd.config.schema import VersionConfig

log = logging.getLogger(__name__)
MEASURE_TIMEOUT_SECONDS = 3600.0
# The version's settings that change what a path computes or how fast it runs.
COMPUTATION_FIELDS = ("task", "device", "fallback", "trust_remote_code", "max_seq_length", "batch_size")


def settings(version: VersionConfig) -> tuple[list[str], float]:
    """(the paths to compare, the accuracy gate): a `backend = "auto"` version's own, else
    every path of its task at the task's default gate (cosine 0.99; rerank: Spearman 0.95)."""
    options = version.options
    paths = getattr(options, "paths", None) or paths_for(version.task)
    if version.task == "rerank" and (other := sorted(set(paths) - set(RERANK_PATHS))):
        raise ModelLoadError(f"paths {', '.join(other)} cannot run a cross-encoder (it runs in fp32 on torch); a rerank version's paths: {', '.join(RERANK_PATHS)}")
    gate_name, default = GATES[version.task]
    gate = getattr(options, gate_name, default)  # an ONNX or OpenVINO version's own gate counts too
    return list(paths), float(gate)


def tuned(path: Path, version: VersionConfig, *, force: bool = False) -> TuneRecord:
    """The choice for the version whose files are at ``path``: cached (same CPU, libraries,
    weights and settings), or measured now and cached; ``force`` measures again."""
    from hotswapd.sources.fingerprint import fingerprint

    paths, gate = settings(version)
    task = version.task
    weights = fingerprint(path)
    computation: dict[str, Any] = {field: getattr(version, field) for field in COMPUTATION_FIELDS}
    key = cache_key(weights, {**computation, "paths": sorted(paths), GATES[task][0]: gate})
    if not force:
        cached = read_cached(key)
        problem = _disagreement(cached, task, paths, gate) if cached is not None else None
        if problem:
            log.warning("tuning: the cached choice for %s does not match what it is keyed by (%s); measuring again", path, problem)
        elif cached is not None:
            log.info("tuning: %s chose %s (cached; measured %s)", path, cached.chosen, time.strftime("%Y-%m-%d %H:%M", time.gmtime(cached.measured_at)))
            return cached
    started = time.time()
    rows = _measure(path, computation, paths, gate)
    record = choose(key, weights, rows, gate, started, paths, task)
    try:
        file = write_cached(record)
    except OSError as exc:  # a read-only or full cache: serve the choice, measure again next time
        log.warning("tuning: %s chose %s (%s), but the choice could not be cached: %s", path, record.chosen, record.reason, exc)
        return record
    log.info("tuning: %s chose %s (%s); cached in %s", path, record.chosen, record.reason, file)
    return record


def _disagreement(record: TuneRecord, task: str, paths: list[str], gate: float) -> str | None:
    """What a cached record holds that its key says it cannot: another task or gate, other
    paths, a chosen path that was not asked for, or rows whose backend or options are not their path's."""
    if record.task != task or record.gate != gate:
        return f"{record.task} gate {record.gate}, not {task} gate {gate}"
    if record.chosen not in paths:
        return f"chosen {record.chosen}, not among {', '.join(paths)}"
    for row in record.rows:
        if row.path not in PATHS or dict(row.options) != PATHS[row.path][1]:
            return f"row {row.path} with options {row.options}"
        if task == "rerank" and row.path not in RERANK_PATHS:
            return f"row {row.path} in a reranker's record"
    return None


def choose(key: str, weights: str, rows: list[PathRow], gate: float, started: float, paths: list[str], task: str = "embed") -> TuneRecord:
    """The fastest of ``paths`` above the gate (the reference is measured for comparison,
    and is a candidate only when asked for)."""
    gate_name = GATES[task][0]
    candidates = [row for row in eligible(rows, gate, task) if row.path in paths]
    if not candidates:
        why = "; ".join(f"{row.path}: {row.reason or f'{AGREEMENT[task]} {row.agreement(task)}'}" for row in rows if row.path in paths)
        raise ModelLoadError(f"no path runs here at {gate_name} {gate}: {why}")
    best = max(candidates, key=lambda row: row.short_per_second or 0.0)
    reference = next((row for row in rows if row.path == REFERENCE and row.short_per_second), None)
    ratio = f", {best.short_per_second / reference.short_per_second:.2f}x {REFERENCE}" if reference and best.short_per_second else ""
    what = "pairs" if task == "rerank" else "texts"
    reason = (
        f"fastest on short {what} ({best.short_per_second:.0f}/s{ratio}) of {len(candidates)} measured paths "
        f"whose {'scores' if task == 'rerank' else 'vectors'} agree with fp32 at {AGREEMENT[task]} >= {gate}"
    )
    return TuneRecord(
        key=key,
        cpu=cpu_identity(),
        libraries=library_versions(),
        weights=weights,
        measured_at=started,
        seconds=round(time.time() - started, 2),
        task=task,
        **{gate_name: gate},
        rows=rows,
        chosen=best.path,
        reason=reason,
    )


def _measure(path: Path, computation: dict[str, Any], paths: list[str], gate: float) -> list[PathRow]:
    with tempfile.TemporaryDirectory(prefix="hotswapd-tune-") as work:
        spec, out = Path(work) / "spec.json", Path(work) / "rows.json"
        spec.write_text(json.dumps({"path": str(path), "version": computation, "paths": paths, "gate": gate}))
        command = [sys.executable, "-m", "hotswapd.tuning.measure", "--spec", str(spec), "--out", str(out)]
        log.info("tuning: measuring %d paths of %s (a subprocess)", len(paths), path)
        try:
            done = children.run(command, MEASURE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as exc:
            raise ModelLoadError(f"measuring the paths of {path} took over {MEASURE_TIMEOUT_SECONDS:.0f} s and was stopped") from exc
        except children.Stopped as exc:
            raise ModelLoadError(f"measuring the paths of {path} was stopped: the daemon is stopping") from exc
        if done.returncode != 0:
            raise ModelLoadError(f"measuring the paths of {path} failed: {children.failure(done)}")
        try:
            return [PathRow.model_validate(row) for row in json.loads(out.read_text())]
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"measuring the paths of {path} gave no usable result: {exc}") from exc
