"""Routing state that must survive a restart: active versions and rollouts set by commands.

Written atomically (temp file + fsync + rename) so a crash never leaves half a file. Read
as untrusted bytes: a file that is not UTF-8 JSON of the expected shape is renamed aside
(``state.json.corrupt-<time>``) and the daemon starts from the config's defaults, saying
why, instead of failing to start (and being restarted in a loop by systemd).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hotswapd.host.safefiles import NotRegularFile, read_regular

log = logging.getLogger(__name__)
MAX_STATE_BYTES = 4 * 2**20


class _RolloutState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: str
    target: str
    strategy: Literal["canary", "split", "gradual"]
    share: float = Field(ge=0, le=100, allow_inf_nan=False)
    sticky: bool = False
    steps: list[Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]] = Field(default_factory=list, max_length=100)
    step_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    step_requests: int | None = Field(default=None, gt=0, le=10**9)
    forced: bool = False
    trigger: str = "cli"
    started_at: float = Field(default=0.0, allow_inf_nan=False)
    step_served: int = Field(default=0, ge=0, le=10**12)

    @model_validator(mode="after")
    def _gradual_has_steps(self) -> _RolloutState:
        if self.strategy == "gradual" and not self.steps:
            raise ValueError("a gradual rollout needs its steps")
        return self


class _RouteState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    active: str
    previous: str | None = None
    config_active: str = ""
    rollout: _RolloutState | None = None


class _State(BaseModel):
    model_config = ConfigDict(extra="ignore")

    models: dict[str, _RouteState] = {}


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.set_aside: str | None = None  # why the last load renamed the file aside, if it did
        self.last_error: str | None = None  # why the last save failed, if it did

    def load(self) -> dict[str, Any]:
        """The saved state, validated; {} when there is none or it was unusable."""
        try:
            raw = read_regular(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return {}
        except (NotRegularFile, ValueError) as exc:  # a FIFO, a device, a directory; too big
            self._set_aside(str(exc))
            return {}
        except OSError as exc:
            log.error("cannot read state file %s (%s); starting from the config's defaults", self.path, exc.strerror)
            return {}
        try:
            return _State.model_validate(json.loads(raw)).model_dump()
        except (ValueError, RecursionError, ValidationError) as exc:  # bad UTF-8/JSON, huge numbers, nesting, shape
            self._set_aside(f"{type(exc).__name__}: {str(exc)[:300]}")
            return {}

    def _set_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"could not be moved aside ({exc.strerror})"
        self.set_aside = f"state file {self.path} is unusable ({why}); {where}; starting from the config's defaults"
        log.error("%s", self.set_aside)

    def save(self, data: dict[str, Any]) -> bool:
        """Write the state; False (logged, and kept in :attr:`last_error`) when it could not
        be persisted: the in-memory state stays as it is, and callers say so."""
        temp: str | None = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            self.last_error = f"cannot write state file {self.path}: {exc.strerror or exc}"
            log.error("%s", self.last_error)
            if temp is not None:
                Path(temp).unlink(missing_ok=True)
            return False
        self.last_error = None
        return True
