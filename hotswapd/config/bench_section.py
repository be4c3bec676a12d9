"""The ``[bench]`` section: periodic comparative benchmarks of the versions being served.

Off unless ``every_requests`` or ``every_seconds`` is set. A round measures each target
version on a small fixed probe set through the registry and the inference thread, one small
slice at a time, only while no request is queued or has arrived in the last ``idle_ms``, and
spends at most ``max_share`` of the wall clock doing so: the live p99 is the constraint.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class BenchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    every_requests: PositiveInt | None = None
    every_seconds: float | None = Field(default=None, ge=1, le=30 * 86400)
    # MODEL@VERSION; default: each model's active version, its rollout target, and any other
    # version loaded. A version not loaded is skipped unless `load` is true.
    versions: list[str] | None = None
    load: bool = False
    idle_ms: float = Field(default=50.0, ge=0, le=60_000)
    # The most of the wall clock a round's slices may take; the round waits between slices.
    max_share: float = Field(default=0.01, gt=0, le=1)
    batch_size: PositiveInt = Field(default=16, le=256)
    # A round gives up after this long (a daemon never idle enough to finish it).
    max_round_seconds: float = Field(default=3600.0, gt=0)
    # The recommendation: the fastest version agreeing with the active one at least this much.
    min_agreement: float = Field(default=0.98, ge=-1, le=1)
    # An alert (bench_regression) when a version is this much slower than the median of its
    # last rounds with the same fingerprint.
    regression: float = Field(default=0.25, gt=0, lt=1)

    @field_validator("versions")
    @classmethod
    def _specs(cls, value: list[str] | None) -> list[str] | None:
        import re

        for spec in value or []:
            if not re.match(NAME, spec):
                raise ValueError(f"{spec[:80]!r} must be MODEL@VERSION")
        return value

    @property
    def enabled(self) -> bool:
        return self.every_requests is not None or self.every_seconds is not None
