"""Fixtures of the in-process depth: a fresh in-process daemon per test (milliseconds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests import fakebackend
from tests.inproc import InprocDaemon, inproc_daemon

StartDaemon = Callable[..., AbstractContextManager[InprocDaemon]]


@pytest.fixture()
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartDaemon]:
    def starter(config_text: str, **kwargs: object) -> AbstractContextManager[InprocDaemon]:
        return inproc_daemon(config_text, tmp_path, monkeypatch, **kwargs)  # type: ignore[arg-type]

    yield starter
    fakebackend.reset()
