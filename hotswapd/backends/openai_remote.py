"""Backend ``openai``: any OpenAI-compatible embeddings endpoint (OpenAI, Infinity, TEI,
Ollama, vLLM, another hotswapd) as a version.

Texts go out as ``POST {endpoint}/embeddings`` with ``encoding_format = "base64"``, in
calls of at most ``max_batch`` texts; 429, 5xx, timeouts and refused connections are
retried with exponential backoff (``Retry-After`` honoured, capped), then become a typed
``inference_error`` naming the endpoint and the status. The daemon keeps serving.

What answers behind an endpoint can change without notice: the version's ``identity``
(:mod:`hotswapd.backends.support.remote_identity`) digests the endpoint, the remote model's name
and the probe's vectors, at load and every ``recheck_seconds``.

``source`` may be ``remote:`` (no local files) or a directory with the remote model's
``tokenizer.json``: then texts are counted (usage), and long texts handled, locally too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from hotswapd.backends.support.event_loop import LoopThread
from hotswapd.backends.support.pooling import l2_normalize
from hotswapd.backends.support.remote_identity import MAX_ANSWER_BYTES, RemoteIdentity
from hotswapd.errors import InferenceError, ModelLoadError

if TYPE_CHECKING:
    import httpx
    import numpy as np

    from hotswapd.backends import VersionSpec

log = logging.getLogger(__name__)
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
MAX_BACKOFF_SECONDS = 10.0


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(min_length=1)  # the base URL, e.g. https://api.openai.com/v1
    remote_model: str = Field(min_length=1)
    api_key_env: str | None = None  # the environment variable holding the API key
    timeout_seconds: PositiveFloat = 30.0
    retries: int = Field(default=3, ge=0, le=10)
    max_batch: PositiveInt = 256  # texts per remote call
    dimensions: PositiveInt | None = None  # asked of the remote (Matryoshka models)
    recheck_seconds: PositiveFloat = 300.0

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {value!r} must be an http:// or https:// URL")
        return value.rstrip("/")


class OpenAIEmbedder:
    device = "remote"
    memory_bytes = 0  # nothing of the model lives in the daemon

    def __init__(self, client: httpx.AsyncClient, loop: LoopThread, options: Options, batch_size: int, tokenizer: Any = None) -> None:
        self._client = client
        self._loop = loop
        self._options = options
        self.batch_size = batch_size
        where = f"{options.endpoint}|{options.remote_model}|{options.dimensions}"
        self._identity = RemoteIdentity(where, self._embed, options.recheck_seconds)
        self.dimension = self._identity.dimension
        if tokenizer is not None:  # usage counts and long texts, with the remote model's own tokenizer
            self.count_tokens = tokenizer.count_tokens
            self.token_windows = tokenizer.token_windows
            self.max_tokens = tokenizer.max_seq_length
        self._identity.start()

    @property
    def identity(self) -> str:
        """Part of the version's fingerprint: changes when the remote model does."""
        return self._identity.value

    def encode(self, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
        import numpy as np

        step = self._options.max_batch
        parts = [self._embed(list(texts[start : start + step])) for start in range(0, len(texts), step)]
        vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        return l2_normalize(vectors) if normalize else vectors

    @property
    def _url(self) -> str:
        return f"{self._options.endpoint}/embeddings"

    def _embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        body: dict[str, Any] = {"model": self._options.remote_model, "input": texts, "encoding_format": "base64"}
        if self._options.dimensions is not None:
            body["dimensions"] = self._options.dimensions
        answer = self._post(body)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(texts):
            raise InferenceError(f"{self._url} answered without one embedding per text ({len(texts)} sent)")
        rows: list[Any] = [None] * len(texts)
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(texts) or rows[index] is not None:
                raise InferenceError(f"{self._url} answered an embedding with a bad or repeated index")
            rows[index] = _vector(item.get("embedding"), self._url)
        widths = {len(row) for row in rows}
        if len(widths) != 1 or 0 in widths:
            raise InferenceError(f"{self._url} answered embeddings of different or zero lengths ({sorted(widths)})")
        vectors = np.stack(rows)
        if not np.isfinite(vectors).all():
            raise InferenceError(f"{self._url} answered NaN or infinite components")
        return vectors

    def _post(self, body: dict[str, Any]) -> Any:
        import httpx

        for attempt in range(self._options.retries + 1):
            last = attempt == self._options.retries
            try:
                status, headers, content = self._exchange(body)
            except httpx.HTTPError as exc:  # refused, reset, timed out
                if last:
                    raise InferenceError(f"{self._url} unreachable after {attempt + 1} attempts: {type(exc).__name__}: {exc}") from exc
                time.sleep(_backoff(attempt, None))
                continue
            if status in RETRY_STATUSES and not last:
                time.sleep(_backoff(attempt, headers.get("retry-after")))
                continue
            if status != 200:
                raise InferenceError(f"{self._url} answered HTTP {status}: {_error_message(content)}")
            try:
                return json.loads(content)
            except (ValueError, RecursionError) as exc:
                raise InferenceError(f"{self._url} answered invalid JSON: {content[:80]!r}") from exc
        raise AssertionError("unreachable")

    def _exchange(self, body: dict[str, Any]) -> tuple[int, httpx.Headers, bytes]:
        """One call, bounded in all: ``timeout_seconds`` from the request to the last byte
        of the answer (httpx's own timeout is per read, so a remote that trickles its head or
        its body a byte at a time would otherwise hold the batch for hours), and refused past
        ``MAX_ANSWER_BYTES`` as it streams in (never held whole first). It runs on the
        backend's event loop, where a deadline cancels the call wherever it is blocked."""
        return self._loop.run(self._exchange_async(body))

    async def _exchange_async(self, body: dict[str, Any]) -> tuple[int, httpx.Headers, bytes]:
        import httpx

        seconds = self._options.timeout_seconds
        try:
            async with asyncio.timeout(seconds), self._client.stream("POST", self._url, json=body) as response:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise InferenceError(f"{self._url} answered more than {MAX_ANSWER_BYTES} bytes: not an answer")
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks)
        except TimeoutError:
            raise httpx.ReadTimeout(f"the answer took more than {seconds:g} s in all") from None

    def space(self) -> dict[str, object]:
        return {"remote": self._options.endpoint, "remote_model": self._options.remote_model}

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self._options.endpoint, "remote_model": self._options.remote_model, "identity": self.identity}

    def close(self) -> None:
        self._identity.close()
        self._loop.close(self._client.aclose())


def _vector(value: Any, url: str) -> Any:
    import numpy as np

    if isinstance(value, str):  # base64 of little-endian float32
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise InferenceError(f"{url} answered an embedding that is not base64") from exc
        if len(raw) % 4:
            raise InferenceError(f"{url} answered an embedding of {len(raw)} bytes: not float32s")
        return np.frombuffer(raw, dtype="<f4")
    if isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        return np.asarray(value, dtype=np.float32)  # a server that ignores encoding_format
    raise InferenceError(f"{url} answered an embedding that is neither base64 nor a list of numbers")


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after is not None:
        try:
            return min(MAX_BACKOFF_SECONDS, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return min(MAX_BACKOFF_SECONDS, 0.2 * 2**attempt)


def _error_message(content: bytes) -> str:
    try:
        error = json.loads(content).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:300]
    except (ValueError, AttributeError, RecursionError):
        pass
    return content[:300].decode("utf-8", "replace") or "no body"


def load(path: Path, version: VersionSpec) -> OpenAIEmbedder:
    try:
        import httpx
    except ImportError as exc:
        raise ModelLoadError("backend 'openai' needs httpx: pip install 'hotswap[http]'") from exc
    options: Options = version.options  # type: ignore[assignment]
    headers = {}
    if options.api_key_env:
        key = os.environ.get(options.api_key_env)
        if not key:
            raise ModelLoadError(f"backend 'openai': {options.api_key_env} (api_key_env) is unset or empty")
        headers["Authorization"] = f"Bearer {key}"
    tokenizer = None
    if (path / "tokenizer.json").is_file():
        from hotswapd.backends.support.tokenizing import TextTokenizer

        tokenizer = TextTokenizer(path / "tokenizer.json", version.max_seq_length or _max_tokens(path))
    client = httpx.AsyncClient(timeout=options.timeout_seconds, headers=headers)
    loop = LoopThread("hotswapd-openai")
    try:
        embedder = OpenAIEmbedder(client, loop, options, version.batch_size, tokenizer)
        embedder.model_max_tokens = _max_tokens(path) if tokenizer is not None else None  # the fingerprint's normal form
    except InferenceError as exc:
        loop.close(client.aclose())
        raise ModelLoadError(f"openai endpoint check failed: {exc.message}") from exc
    log.info("openai: %s (%s) answers %d-dim vectors (identity %s)", options.endpoint, options.remote_model, embedder.dimension, embedder.identity)
    return embedder


def _max_tokens(path: Path) -> int:
    """The tokenizer directory's own limit (sentence-transformers or tokenizer config), else 512."""
    from hotswapd.backends.support.model_files import read_layout

    try:
        return read_layout(path).max_seq_length
    except (ModelLoadError, OSError, ValueError):
        return 512


def import_libraries() -> None:
    try:
        import httpx  # noqa: F401
    except ImportError:
        pass  # load() says which extra to install
