"""The OpenAI embeddings API's shapes: the request read strictly, the response and the
error object written exactly as OpenAI writes them.

https://platform.openai.com/docs/api-reference/embeddings. ``input`` is a string or a list
of strings (token-id arrays are refused with a clear 400: the text is what a version's own
tokenizer must see). ``encoding_format`` ``base64`` is the little-endian float32 bytes of
each vector; the ``openai`` package asks for it when its caller names no format.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from hotswapd.wire.compact import DTYPES
from hotswapd.errors import Busy, HotswapError
from hotswapd.wire.protocol import MAX_NAME_CHARS

FORMATS = ("float", "base64")
# A longer name cannot be a model (the wire's own limit), and would only bloat the header.
MAX_MODEL_CHARS = MAX_NAME_CHARS


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str]
    model: str | None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    prompt: str | None = None  # `input_type` (as Voyage and others name it) or `prompt`: a version's prompt
    # Infinity's `embedding_dtype`: float32 (OpenAI's own), float16, int8, uint8, binary, ubinary.
    dtype: str = "float32"


@dataclass
class ApiError(Exception):
    """An answer in OpenAI's error shape, with its HTTP status."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return orjson.dumps({"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}})


def json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, strictly (no NaN or Infinity), or a 400."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not a JSON object: {type(exc).__name__}: {str(exc)[:200]}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return data


def parse_embeddings(body: bytes) -> EmbeddingsRequest:
    data = json_object(body)
    texts = _texts(data.get("input"))
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.partition("@")[0] or len(model) > MAX_MODEL_CHARS):
        raise ApiError(400, f"'model' must be a model name (NAME or NAME@VERSION, at most {MAX_MODEL_CHARS} characters)", param="model")
    fmt = data.get("encoding_format")
    fmt = "float" if fmt is None else fmt
    if fmt not in FORMATS:
        raise ApiError(400, f"'encoding_format' must be one of {', '.join(FORMATS)}, not {fmt!r}", param="encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise ApiError(400, "'dimensions' must be a positive integer", param="dimensions")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, "'user' must be a string", param="user")  # accepted and ignored otherwise
    dtype = data.get("embedding_dtype")
    dtype = "float32" if dtype is None else dtype
    if dtype not in DTYPES:
        raise ApiError(400, f"'embedding_dtype' must be one of {', '.join(DTYPES)}, not {str(dtype)[:40]!r}", param="embedding_dtype")
    return EmbeddingsRequest(texts, model, fmt, dimensions, _prompt(data), dtype)


def _prompt(data: dict[str, Any]) -> str | None:
    given = {name: data[name] for name in ("input_type", "prompt") if data.get(name) is not None}
    if len(given) > 1 and len(set(map(str, given.values()))) > 1:
        raise ApiError(400, "'input_type' and 'prompt' name different prompts: give one", param="input_type")
    for name, value in given.items():
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise ApiError(400, f"'{name}' must be the name of one of the version's prompts (query, passage, ...)", param=name)
        return value
    return None


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'input' must be a non-empty string or a non-empty list of strings", param="input")
    if all(isinstance(item, str) for item in value):
        empty = next((i for i, item in enumerate(value) if not item), None)
        if empty is not None:  # as OpenAI: an empty text has no embedding worth returning
            raise ApiError(400, f"'input'[{empty}] is an empty string", param="input")
        return value
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value) or all(isinstance(item, list) for item in value):
        raise ApiError(400, "'input' as token ids is not supported: send the text (each version tokenises it with its own tokenizer)", param="input")
    bad = next(i for i, item in enumerate(value) if not isinstance(item, str))
    raise ApiError(400, f"'input'[{bad}] is a {type(value[bad]).__name__}; every item must be a string", param="input")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def shaped(vectors: np.ndarray, dimensions: int | None, normalized: bool) -> np.ndarray:
    """``dimensions`` (Matryoshka): the first N components, re-normalised when the version's
    vectors are; more than the model has is the caller's error."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if dimensions > vectors.shape[1]:
        raise ApiError(400, f"'dimensions' is {dimensions}; this version's vectors have {vectors.shape[1]}", param="dimensions")
    cut = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    if normalized:
        cut /= np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    return cut


def embeddings_body(vectors: np.ndarray, encoding_format: str, model: str, tokens: int | None) -> bytes:
    """``vectors`` float32 or a compact type (hotswapd.wire.compact): base64 carries the rows'
    bytes in their own type, little-endian; float carries their numbers."""
    if encoding_format == "base64":
        little = vectors.astype(vectors.dtype.newbyteorder("<"), copy=False)
        embeddings: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    else:
        embeddings = list(vectors)  # numpy rows: orjson writes them without a Python float each
    data = [{"object": "embedding", "index": index, "embedding": row} for index, row in enumerate(embeddings)]
    count = tokens if tokens is not None else 0
    return orjson.dumps(
        {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": count, "total_tokens": count}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


# A hotswap error code -> (HTTP status, OpenAI error type, OpenAI code).
STATUSES: dict[str, tuple[int, str, str | None]] = {
    "unknown_model": (404, "invalid_request_error", "model_not_found"),
    "unknown_version": (404, "invalid_request_error", "model_not_found"),
    "corpus_unavailable": (409, "invalid_request_error", "corpus_unavailable"),
    "wrong_task": (400, "invalid_request_error", "wrong_task"),  # an embedding asked of a reranker, or the reverse
    "empty_request": (400, "invalid_request_error", None),
    "invalid_text": (400, "invalid_request_error", None),
    "text_too_long": (400, "invalid_request_error", "context_length_exceeded"),
    "batch_too_large": (400, "invalid_request_error", None),
    "protocol_error": (400, "invalid_request_error", None),
    "bad_request": (400, "invalid_request_error", None),
    "busy": (429, "rate_limit_error", "rate_limit_exceeded"),
    "shutting_down": (503, "server_error", "service_unavailable"),
    "fleet_unavailable": (503, "server_error", "fleet_unavailable"),
    "fleet_refused": (409, "invalid_request_error", "fleet_refused"),
    "model_load_error": (503, "server_error", "model_unavailable"),
    "deadline_exceeded": (503, "server_error", "timeout"),
    "daemon_timeout": (503, "server_error", "timeout"),
    "cancelled": (499, "invalid_request_error", "client_closed_request"),  # nginx's code; nobody is there to read it
}


def from_hotswap(error: HotswapError) -> ApiError:
    status, kind, code = STATUSES.get(error.code, (500, "server_error", error.code))
    headers = {}
    if isinstance(error, Busy):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    param = "input" if error.code in ("invalid_text", "text_too_long", "batch_too_large", "empty_request") else ("model" if status == 404 else None)
    return ApiError(status, error.message, kind, param, code, headers)
