"""The wire format between ``hs``/:class:`~hotswapd.client.connection.Client` and the daemon.

A message is a ZeroMQ multipart message::

    frame 0      header: UTF-8 JSON object, typed below, versioned by "v"
    frame 1..n   payload: raw bytes, meaning depends on the op

Requests of op ``encode`` carry one UTF-8 text per payload frame. Replies to ``encode``
carry one payload frame of ``count * dim`` little-endian float32 values, row-major, which
the client views without copying. Every other op carries its data in the header.

This module imports nothing heavy: the CLI uses it on its fast path.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from hotswapd.errors import HotswapError, ProtocolError, UnknownOp, UnsupportedVersion

WIRE_VERSION = 1
VECTOR_DTYPE = "<f4"
# An op is a short ASCII name (letters, digits, _); which ones exist is the daemon's op table
# (hotswapd.core.handlers), which refuses the others with the list it knows.
Op = str
MAX_OP_CHARS = 32
REQUEST_FIELDS = frozenset({"v", "id", "op", "model", "options"})

MAX_HEADER_BYTES = 64 * 1024  # a request's header: small, from an untrusted peer
MAX_REPLY_HEADER_BYTES = 64 * 2**20  # a reply's (status, models, history): from the daemon
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 256


if TYPE_CHECKING:
    # The wire's shapes, for type checkers only: building TypedDicts at run time costs the
    # CLI start-up time it does not need.
    from typing import TypedDict

    class RequestHeader(TypedDict):
        v: int
        id: str
        op: Op
        model: str | None
        options: dict[str, Any]

    class ErrorBody(TypedDict, total=False):
        code: str
        message: str
        retry_after: float
        index: int

    class ReplyHeader(TypedDict, total=False):
        v: int
        id: str
        ok: bool
        result: dict[str, Any]
        error: ErrorBody


class Request:
    """A request the daemon has validated at the wire level."""

    __slots__ = ("id", "op", "model", "options", "payload", "peer")

    def __init__(self, id: str, op: Op, model: str | None, options: dict[str, Any], payload: list[bytes], peer: str | None = None) -> None:
        self.id = id
        self.op = op
        self.model = model
        self.options = options
        self.payload = payload
        self.peer = peer  # the CURVE key's name of a TCP client; None over ipc


def encode_request(
    request_id: str,
    op: Op,
    *,
    model: str | None = None,
    options: dict[str, Any] | None = None,
    payload: list[bytes] | None = None,
) -> list[bytes]:
    header: RequestHeader = {
        "v": WIRE_VERSION,
        "id": request_id,
        "op": op,
        "model": model,
        "options": options or {},
    }
    return [json.dumps(header, separators=(",", ":")).encode(), *(payload or [])]


# A client withdraws one of its own requests in flight (it left, or stopped waiting): the
# daemon drops what it has not run of it. Answered like any request; its id is the
# withdrawn one's with this suffix, so a client that no longer waits drops the answer.
CANCEL_OP = "cancel"
CANCEL_SUFFIX = "-cancel"


def encode_cancel(request_id: str) -> list[bytes]:
    return encode_request(f"{request_id}{CANCEL_SUFFIX}", CANCEL_OP, options={"id": request_id})


def _load_header(frame: bytes, limit: int = MAX_HEADER_BYTES) -> dict[str, Any]:
    if len(frame) > limit:
        raise ProtocolError(f"header frame is {len(frame)} bytes; the limit is {limit}")
    try:
        header = json.loads(frame, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge numbers, deep nesting
        raise ProtocolError(f"header frame is not a UTF-8 JSON object: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(header, dict):
        raise ProtocolError("header frame must be a JSON object")
    return header


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON; Python's decoder takes them unless told not to, and a
    NaN share or timeout passes every range check."""
    raise ValueError(f"{name} is not a JSON number")


def _check_version(header: dict[str, Any]) -> None:
    version = header.get("v")
    if type(version) is not int or version != WIRE_VERSION:  # `true == 1` in Python; not on the wire
        raise UnsupportedVersion(f"wire version {version!r} is not supported; this side speaks {WIRE_VERSION}")


def _optional_name(header: dict[str, Any], key: str) -> str | None:
    value = header.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise ProtocolError(f"header field {key!r} must be a non-empty string of at most {MAX_NAME_CHARS} chars")
    return value


_EARLY_ID = re.compile(rb'"id"\s*:\s*"([A-Za-z0-9_.:-]{1,%d})"' % MAX_ID_CHARS)


def request_id_of(frames: list[bytes]) -> str:
    """Best-effort id of a possibly malformed request, so even its error reply can be matched."""
    if frames and len(frames[0]) > MAX_HEADER_BYTES:
        # Too big to parse, but its sender is waiting for this id: clients write it near the
        # start, so a bounded look at the first bytes finds it (else the caller would wait
        # for its whole timeout on a reply it cannot match).
        found = _EARLY_ID.search(bytes(frames[0][:512]))
        return found.group(1).decode() if found else ""
    try:
        header = json.loads(frames[0]) if frames else {}
    except (ValueError, RecursionError):
        return ""
    rid = header.get("id") if isinstance(header, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS else ""


def decode_request(frames: list[bytes]) -> Request:
    """Validate every header field of a request; raise a typed error for the first bad one."""
    if not frames:
        raise ProtocolError("empty message: expected a header frame")
    header = _load_header(frames[0])
    _check_version(header)
    rid = header.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
        raise ProtocolError(f"header field 'id' must be a non-empty string of at most {MAX_ID_CHARS} chars")
    op = header.get("op")
    if not isinstance(op, str):
        raise ProtocolError("header field 'op' must be a string")
    if not (0 < len(op) <= MAX_OP_CHARS and op.isascii() and op.replace("_", "").isalnum()):
        raise UnknownOp(f"unknown op {op[:MAX_OP_CHARS]!r}")
    options = header.get("options", {})
    if not isinstance(options, dict):
        raise ProtocolError("header field 'options' must be an object")
    unknown = set(header) - REQUEST_FIELDS
    if unknown:
        raise ProtocolError(f"unknown header fields: {', '.join(sorted(unknown))}")
    return Request(id=rid, op=op, model=_optional_name(header, "model"), options=options, payload=frames[1:])  # type: ignore[arg-type]


def encode_ok(request_id: str, result: dict[str, Any], payload: list[Any] | None = None) -> list[Any]:
    header: ReplyHeader = {"v": WIRE_VERSION, "id": request_id, "ok": True, "result": result}
    return [json.dumps(header, separators=(",", ":")).encode(), *(payload or [])]


def encode_error(request_id: str, error: HotswapError) -> list[bytes]:
    body: ErrorBody = {"code": error.code, "message": error.message}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        body["retry_after"] = round(float(retry_after), 3)  # seconds, for `busy`
    index = getattr(error, "index", None)
    if index is not None:
        body["index"] = int(index)  # which text of the request, for invalid_text / text_too_long
    header: ReplyHeader = {"v": WIRE_VERSION, "id": request_id, "ok": False, "error": body}
    return [json.dumps(header, separators=(",", ":")).encode()]


def decode_reply(frames: list[memoryview]) -> tuple[str, dict[str, Any], list[memoryview], bool]:
    """Split a reply into (id, result-or-error, payload, ok) for the client."""
    if not frames:
        raise ProtocolError("empty reply from daemon")
    header = _load_header(bytes(frames[0]), MAX_REPLY_HEADER_BYTES)
    _check_version(header)
    rid = header.get("id", "")
    if header.get("ok") is True and isinstance(header.get("result"), dict):
        return rid, header["result"], frames[1:], True
    error = header.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        body: dict[str, Any] = {"code": error["code"], "message": str(error.get("message", ""))}
        retry_after = error.get("retry_after")
        if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool) and 0 <= retry_after <= 3600:
            body["retry_after"] = float(retry_after)
        index = error.get("index")
        if type(index) is int and index >= 0:
            body["index"] = index
        return rid, body, [], False
    raise ProtocolError("reply header has neither a result nor an error")
