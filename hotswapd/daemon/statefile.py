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
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)
MAX_STATE_BYTES = 4 * 2**20


class _RolloutState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: str
    target: str
    strategy: str
    share: float
    sticky: bool = False
    steps: list[float] = []
    step_seconds: float | None = None
    step_requests: int | None = None
    forced: bool = False
    trigger: str = "cli"
    started_at: float = 0.0
    step_served: int = 0


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
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("cannot read state file %s (%s); starting from the config's defaults", self.path, exc.strerror)
            return {}
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"{len(raw)} bytes, more than a state file ever holds")
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
