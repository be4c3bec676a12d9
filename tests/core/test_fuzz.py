"""Property-based fuzzing (hypothesis) of everything that turns outside bytes into the daemon's
state: the frame decoder, the request validators (against the in-process daemon), the
config loader and the state-file loader.

Every input must get a typed reply or a typed error, and the daemon must keep answering
`ping`. The seed is fixed (derandomize) and the budget small in CI; set HOTSWAP_FUZZ_EXAMPLES
for a longer run. Each crash found is kept below as an explicit @example.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hotswapd.config.schema import ConfigError, load_config, parse_config
from hotswapd.core.statefile import StateFile
from hotswapd.errors import HotswapError
from hotswapd.core.handlers import CORE_OPS
from hotswapd.daemon.main import features
from hotswapd.wire.protocol import decode_reply, decode_request, request_id_of
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config

EXAMPLES = int(os.environ.get("HOTSWAP_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False), st.text(max_size=20),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
surrogate_text = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4)

HOSTILE_HEADERS = [
    b"[" * 990,
    b'{"v": 1, "id": "x", "op": "ping", "model": ' + b"9" * 4301 + b"}",
    b'{"v": true, "id": "x", "op": "ping"}',
    b'{"v": 1, "id": "x", "op": "encode", "options": {"deadline_ms": 1e999}}',
    b"\xff\xfe",
]


def valid_header(op: str) -> dict[str, Any]:
    return {"v": 1, "id": "fuzz-1", "op": op, "model": None, "options": {}}


# A well-formed `shutdown` would end the run: the one op the fuzzer leaves out.
FUZZED_OPS = sorted({*CORE_OPS, *features().ops} - {"shutdown"})  # the daemon's whole op table


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    header = valid_header(draw(st.sampled_from(FUZZED_OPS)))
    field = draw(st.sampled_from(["v", "id", "op", "model", "options", "extra"]))
    header[field] = draw(json_values | surrogate_text)
    if draw(st.booleans()):
        header["options"] = draw(st.dictionaries(st.sampled_from(["normalize", "key", "deadline_ms", "limit", "all", "skip", "version", "strategy", "share", "steps", "force", "abort"]), json_values, max_size=3))
    text = json.dumps(header, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


frames_strategy = st.lists(st.one_of(mutated_headers(), st.binary(max_size=200)), min_size=0, max_size=4)


@FUZZ
@given(frames_strategy)
@example([HOSTILE_HEADERS[0]])
@example([HOSTILE_HEADERS[1]])
@example([HOSTILE_HEADERS[2]])
def test_frame_decoder_is_total(frames: list[bytes]) -> None:
    assert isinstance(request_id_of(frames), str)
    try:
        decode_request(frames)
    except HotswapError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=3))
def test_reply_decoder_is_total(frames: list[bytes]) -> None:
    try:
        decode_reply([memoryview(frame) for frame in frames])
    except HotswapError:
        pass


def test_the_daemon_answers_every_fuzzed_request_with_a_typed_reply(start: StartDaemon, tmp_path: Path) -> None:
    codes: dict[str, int] = {}
    with start(fake_config(tmp_path, {"v1": {}, "v2": {}})) as daemon, daemon.client(timeout=10) as pinger:
        context = zmq.Context.instance()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(daemon.endpoint)
        try:

            @FUZZ
            @given(st.lists(st.one_of(mutated_headers(), st.binary(max_size=100)), min_size=1, max_size=3))
            @example([HOSTILE_HEADERS[3]])
            @example([HOSTILE_HEADERS[4], b"text"])
            @example([b'{"v": 1, "id": "x", "op": "history", "options": {"limit": null, "skip": null}}'])  # found by bench_faults
            def one(frames: list[bytes]) -> None:
                sock.send_multipart(frames)
                assert sock.poll(10_000), f"no reply to {frames!r}"
                reply = sock.recv_multipart()
                _, body, _, ok = decode_reply([memoryview(frame) for frame in reply])
                code = "ok" if ok else body["code"]
                codes[code] = codes.get(code, 0) + 1
                assert code != "internal_error", (frames, body)

            one()
        finally:
            sock.close()
        assert pinger.ping()["pong"] is True
        assert pinger.status()["in_flight"] == 0
    assert sum(codes.values()) >= min(EXAMPLES, 50)


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(min_value=-(10**20), max_value=10**20), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["daemon", "cache", "memory", "models", "x"]), toml_values, max_size=4))
def test_config_parser_raises_only_config_errors(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except ConfigError:
        pass


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(b"x = " + b"9" * 5000)
@example(b"x = " + b"[" * 3000 + b"]" * 3000)
def test_config_file_loader_raises_only_config_errors(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError:
        pass


@FUZZ
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()) | st.builds(lambda m: json.dumps({"models": m}).encode(), json_values))
@example(b"[" * 5000)
@example(b'{"models": {"m": {"active": 7}}}')
def test_state_file_loader_never_raises(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_bytes(raw)
    loaded = StateFile(path).load()
    assert isinstance(loaded, dict)
    for route in (loaded.get("models") or {}).values():
        assert isinstance(route["active"], str)
