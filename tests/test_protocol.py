"""The wire format, without a daemon."""

from __future__ import annotations

import json

import pytest

from hotswapd.errors import (
    ERRORS_BY_CODE,
    BatchTooLarge,
    HotswapError,
    ProtocolError,
    UnknownOp,
    UnsupportedVersion,
    error_from_wire,
)
from hotswapd.wire.protocol import (
    MAX_HEADER_BYTES,
    decode_reply,
    decode_request,
    encode_error,
    encode_ok,
    encode_request,
    request_id_of,
)


def test_request_round_trip() -> None:
    frames = encode_request("r1", "encode", model="m", options={"normalize": False}, payload=[b"a", b"b"])
    request = decode_request(frames)
    assert (request.id, request.op, request.model, request.options) == ("r1", "encode", "m", {"normalize": False})
    assert request.payload == [b"a", b"b"]


def test_reply_round_trip() -> None:
    rid, body, payload, ok = decode_reply([memoryview(f) for f in encode_ok("r2", {"x": 1}, [b"\x00" * 8])])
    assert (rid, body, ok) == ("r2", {"x": 1}, True)
    assert bytes(payload[0]) == b"\x00" * 8


def test_error_round_trip_keeps_the_class() -> None:
    frames = encode_error("r3", BatchTooLarge("too many"))
    rid, body, _, ok = decode_reply([memoryview(f) for f in frames])
    assert not ok and rid == "r3"
    error = error_from_wire(body["code"], body["message"])
    assert type(error) is BatchTooLarge and error.message == "too many"


def test_unknown_error_code_becomes_the_root_class() -> None:
    assert type(error_from_wire("from_the_future", "m")) is HotswapError


def test_every_error_code_is_unique() -> None:
    classes = list(ERRORS_BY_CODE.values())
    assert len({cls.code for cls in classes}) == len(classes) >= 18


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"v": 2, "id": "a", "op": "ping"}, UnsupportedVersion),
        ({"v": 1, "id": "", "op": "ping"}, ProtocolError),
        ({"v": 1, "id": "x" * 65, "op": "ping"}, ProtocolError),
        ({"v": 1, "id": "a", "op": 3}, ProtocolError),
        ({"v": 1, "id": "a", "op": "no such op!"}, UnknownOp),
        ({"v": 1, "id": "a", "op": "x" * 33}, UnknownOp),
        ({"v": 1, "id": "a", "op": "ping", "model": ""}, ProtocolError),
        ({"v": 1, "id": "a", "op": "ping", "model": "m" * 300}, ProtocolError),
    ],
)
def test_header_validation(header: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_request([json.dumps(header).encode()])


def test_oversized_header_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        decode_request([b" " * (MAX_HEADER_BYTES + 1)])


def test_request_id_of_malformed_input() -> None:
    assert request_id_of([b"garbage"]) == ""
    assert request_id_of([]) == ""
    assert request_id_of([b'{"id": "abc"}']) == "abc"
    assert request_id_of([b'{"id": 5}']) == ""


@pytest.mark.parametrize(
    "header",
    [b"[" * 990, b'{"v": 1, "id": "x", "op": "ping", "n": ' + b"9" * 5000 + b"}", b'{"v": true, "id": "x", "op": "ping"}', b'{"v": 1.0, "id": "x", "op": "ping"}'],
)
def test_hostile_headers_are_typed_protocol_errors(header: bytes) -> None:
    from hotswapd.errors import ProtocolError
    from hotswapd.wire.protocol import decode_request, request_id_of

    request_id_of([header])  # never raises
    with pytest.raises(ProtocolError):
        decode_request([header])
