"""A tuning's result: every path measured, the one chosen and why, and the key it is cached under.

The cache is a directory on disk: anything may have written it, so a record is read back
through a strict model, and one that does not add up (a choice that is not a measured
path above the accuracy gate) is measured again rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hotswapd.host.cpu import cpu_identity

log = logging.getLogger(__name__)
# What decides how fast and how accurate a path runs, besides the CPU and the weights.
LIBRARIES = ("hotswap", "torch", "sentence-transformers", "transformers", "onnxruntime", "onnx", "openvino", "nncf", "tokenizers")
# Part of the key: bump it when what is measured, or how, changes.
FORMAT = 2  # 2: the task is part of the record (rerank versions are tuned too)
MAX_RECORD_BYTES = 1 << 20

Status = Literal["measured", "refused", "unavailable"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class PathRow(_Strict):
    path: str  # "onnx-int8"
    backend: str
    options: dict[str, str | int | float | bool]
    status: Status
    reason: str | None = None  # why refused or unavailable
    short_per_second: float | None = Field(default=None, ge=0)  # texts/s on short texts (the version's batch size)
    passages_per_second: float | None = Field(default=None, ge=0)  # texts/s on ~200-token passages
    single_p50_ms: float | None = Field(default=None, ge=0)  # one short text per call
    mean_cosine: float | None = Field(default=None, ge=-1, le=1)  # against fp32 sentence-transformers on the check sample
    min_cosine: float | None = Field(default=None, ge=-1, le=1)
    # A reranker's: Spearman of each check query's document order against the torch cross-encoder.
    mean_spearman: float | None = Field(default=None, ge=-1, le=1)
    min_spearman: float | None = Field(default=None, ge=-1, le=1)

    @field_validator("short_per_second", "passages_per_second", "single_p50_ms", "mean_cosine", "min_cosine", "mean_spearman", "min_spearman")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def agreement(self, task: str) -> float | None:
        """What the gate is compared with: an embedder's mean cosine, a reranker's worst
        query's Spearman (the backends' own rerank gate)."""
        return self.min_spearman if task == "rerank" else self.mean_cosine


class TuneRecord(_Strict):
    key: str
    cpu: str
    libraries: dict[str, str]
    weights: str
    measured_at: float = Field(ge=0, le=1e11)  # a time a clock can show (NaN and 1e20 cannot)
    seconds: float = Field(ge=0, le=1e7)
    task: Literal["embed", "rerank"] = "embed"
    min_cosine: float | None = Field(default=None, ge=-1, le=1)  # an embedder's gate
    min_spearman: float | None = Field(default=None, ge=-1, le=1)  # a reranker's gate
    rows: list[PathRow]
    chosen: str
    reason: str

    @property
    def gate(self) -> float | None:
        return self.min_spearman if self.task == "rerank" else self.min_cosine

    @model_validator(mode="after")
    def _chosen_is_eligible(self) -> TuneRecord:
        if self.gate is None:
            raise ValueError(f"a {self.task} record needs its gate ({AGREEMENT_FIELD[self.task]})")
        if self.chosen not in {row.path for row in eligible(self.rows, self.gate, self.task)}:
            raise ValueError(f"chosen path {self.chosen!r} is not a measured path above the gate")
        return self


AGREEMENT = {"embed": "mean cosine", "rerank": "worst-query Spearman"}
AGREEMENT_FIELD = {"embed": "min_cosine", "rerank": "min_spearman"}


def eligible(rows: list[PathRow], gate: float, task: str = "embed") -> list[PathRow]:
    """Measured paths whose output agrees with fp32 at ``gate`` or better (an embedder's
    mean cosine, a reranker's worst-query Spearman)."""
    return [
        row
        for row in rows
        if row.status == "measured" and row.short_per_second and (found := row.agreement(task)) is not None and found >= gate
    ]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            versions[name] = "-"
    return versions


def cache_key(weights: str, computation: dict[str, object]) -> str:
    """What decides the choice: the CPU (model and flags), the libraries, the weights, and
    the version's settings that change what is computed or measured."""
    parts = {"cpu": cpu_identity(), "libraries": library_versions(), "weights": weights, "computation": computation, "format": FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_file(key: str) -> Path:
    from hotswapd.host.paths import cache_dir

    return cache_dir() / "tuning" / f"{key}.json"


def read_cached(key: str) -> TuneRecord | None:
    """The cached record for ``key``, or None when there is none or it is not one."""
    from hotswapd.host.safefiles import read_regular

    file = cache_file(key)
    try:
        record = TuneRecord.model_validate_json(read_regular(file, MAX_RECORD_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("tuning: ignoring the unusable cached choice %s (%s); measuring again", file, str(exc).splitlines()[0][:200])
        return None
    if record.key != key:
        log.warning("tuning: %s holds another key's record; measuring again", file)
        return None
    return record


def write_cached(record: TuneRecord) -> Path:
    from hotswapd.host.safefiles import write_atomically

    file = cache_file(record.key)
    file.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(file, record.model_dump_json(indent=1).encode())
    return file
