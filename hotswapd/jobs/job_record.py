"""A job's checkpoint record: how far its files are good, read back strictly.

Written atomically after the files it describes were synced, so after a kill the files
hold at least what the record says; ``--resume`` cuts whatever lies past it. A damaged
record is refused, never trusted to cut files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hotswapd.errors import HotswapError
from hotswapd.host.safefiles import read_regular, write_atomically

MAX_RECORD_BYTES = 1 << 20


# What every refusal to resume says to do instead.
START_OVER = "start over with --restart (it discards the interrupted job's work)"

class JobError(HotswapError):
    """A job that cannot start, resume or go on as asked, and why."""

    code = "job_error"


class JobRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    version: str
    fingerprint: str
    weights: str | None
    dim: int = Field(ge=1)
    rows: int = Field(ge=0)  # rows written
    rejected: int = Field(ge=0)
    rejects_bytes: int = Field(ge=0)
    input: dict[str, Any]  # what the input was (path, size, mtime, format, fields)
    settings: dict[str, Any]  # what must not change on resume (normalize, texts kept...)
    sink: dict[str, Any]  # the sink's own "how far" (bytes written, parts)

    @property
    def consumed(self) -> int:
        """Input rows taken from the reader: each was written or rejected."""
        return self.rows + self.rejected


def save_record(path: Path, record: JobRecord) -> None:
    write_atomically(path, record.model_dump_json().encode())


def read_record(path: Path) -> JobRecord:
    """FileNotFoundError when there is none; JobError when it cannot be trusted."""
    try:
        return JobRecord.model_validate_json(read_regular(path, MAX_RECORD_BYTES))
    except FileNotFoundError:
        raise
    except (ValidationError, ValueError, OSError) as exc:
        raise JobError(f"{path} is unreadable ({type(exc).__name__}): {START_OVER}") from None
