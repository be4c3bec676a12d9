"""The ``[alerts]`` section of the config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

# Audit events that alert unless `events` says otherwise: each needs an operator.
DEFAULT_EVENTS = ("auto_rollback", "load_failed", "config_rejected", "state_rejected", "memory", "corpus_refused", "corpus_overwritten", "bench_regression")


class AlertsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    command: list[str] | None = None  # argv; the event as JSON on stdin
    webhook: str | None = None  # an http(s) URL; the event as a JSON POST
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=10)  # webhook attempts after the first
    max_pending: PositiveInt = Field(default=256, le=100_000)  # past this, alerts are dropped (and logged)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("must name a program: command = [\"/path/to/program\", \"arg\", ...]")
        return value

    @field_validator("webhook")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook)
