"""An ensemble request whose members answer differently: one refuses, the others compute.

Each member runs the texts as a request of its own (hotswapd.pipeline.encoding._run_parts).
A refusal that one member makes before any model work (a prompt it lacks, a text over its
maximum with long_text = "error") is the whole request's answer: it must not wait for, nor
spend, the other members' inference. And the reply's ``cached`` counts rows served by the
cache, which for an ensemble means rows that no member had to compute.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hotswapd.errors import RequestError, TextTooLong
from tests import fakebackend
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


def _config(tmp_path: Path, a: dict[str, object] | None = None) -> str:
    text = fake_config(tmp_path, {"a": {"dim": 8, **(a or {})}, "b": {"dim": 12, "shift": 3}}, model="base")
    text = text.replace('tag = "a"\n', 'tag = "a"\nprompts = { query = "query: " }\n')
    return text + (
        '[models.combo]\nactive = "cat"\n[models.combo.versions.cat]\nbackend = "ensemble"\ncombine = "concat"\n'
        'members = [{ model = "base", version = "a" }, { model = "base", version = "b" }]\n'
    )


def test_a_text_one_member_refuses_is_refused_without_the_other_members_inference(start: StartDaemon, tmp_path: Path) -> None:
    long = " ".join(f"w{i}" for i in range(40))
    with start(_config(tmp_path, {"max_tokens": 6, "long_text": "error"})) as inproc, inproc.client() as client:
        client.encode(["warm"], "combo@cat")
        fakebackend.CONTROLS["b"].delay = 2.0  # a slow member
        before = fakebackend.CONTROLS["b"].encodes
        started = time.monotonic()
        with pytest.raises(TextTooLong, match=r"ensemble member base@a: text 1 is 42 tokens"):
            client.encode(["short", long], "combo@cat")
        # Refused at once: every member prepares and plans before any of them runs a model.
        assert fakebackend.CONTROLS["b"].encodes == before
        assert time.monotonic() - started < 1.0


def test_a_prompt_one_member_lacks_is_refused_without_the_other_members_inference(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        client.encode(["warm"], "combo@cat")
        before = fakebackend.CONTROLS["a"].encodes
        with pytest.raises(RequestError, match=r"ensemble member base@b: this version has no prompt 'query'"):
            client.encode(["find me"], "combo@cat", prompt="query")
        assert fakebackend.CONTROLS["a"].encodes == before  # base@a encoded "query: find me" for nothing


def test_cached_counts_only_rows_no_member_had_to_compute(start: StartDaemon, tmp_path: Path) -> None:
    with start(_config(tmp_path)) as inproc, inproc.client() as client:
        client.encode(["x"], "base@a")  # a has row 0 cached
        client.encode(["y"], "base@b")  # b has row 1 cached
        reply = client.encode(["x", "y"], "combo@cat")
        # Each row needed one member's model: no row of the answer came from the cache.
        assert reply.cached == 0
