"""The HTTP routes (Starlette): ``POST /v1/embeddings``, ``POST /v1/search`` (a version's
corpus), ``POST /v1/rerank`` (and ``/v2/rerank``, TEI's ``/rerank``), ``GET /v1/models``,
``/health``, ``/metrics``. Every answer, errors included, is built here; nothing raises past a route.

Admin operations (switch, rollback, evict, reload, shutdown) are deliberately absent: they
stay on the owner-only ZeroMQ socket.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
import zmq
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from hotswapd.errors import HotswapError
from hotswapd.config.http_keys import KeyRing, authorised
from hotswapd.http.zmq_bridge import Bridge
from hotswapd.http.openai_api import ApiError, embeddings_body, from_hotswap, parse_embeddings, shaped
from hotswapd.http.rerank_api import RerankRequest, cohere_body, parse_cohere, parse_cohere_embed, parse_tei, parse_tokenize, tei_body
from hotswapd.http.search_api import parse_search, reranked, search_body
from hotswapd.config.http_section import HttpConfig, is_loopback, parse_listen
from hotswapd.wire.compact import CALIBRATED, quantize
from hotswapd.wire.protocol import VECTOR_DTYPE

log = logging.getLogger(__name__)
JSON = "application/json"
CLOSE = {"Connection": "close"}  # after a refused body: uvicorn would otherwise read the rest of it
MIN_BODY_RATE = 64 * 1024  # bytes per second a body may arrive at, past read_timeout_seconds
MAX_KEY_CHARS = 1024  # a sticky key; a longer one would only bloat the request header
Handler = Callable[[Request], Awaitable[Response]]


def build_app(settings: HttpConfig, keys: KeyRing, context: zmq.Context[Any], address: str, health_facts: Callable[[], dict[str, Any]]) -> Starlette:
    bridge = Bridge(context, address, settings.max_pending)
    timeout = settings.timeout_seconds
    max_body = int(settings.max_body_mb * 2**20)
    browser = BrowserRules(settings)

    def guarded(handler: Handler, *, public: bool = False) -> Handler:
        async def route(request: Request) -> Response:
            try:
                browser.check(request)  # before the key and the body: a page elsewhere gets nothing
                if not public and not authorised(request.headers.get("authorization"), keys.keys):
                    raise ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", code="invalid_api_key")
                return await handler(request)
            except ApiError as exc:
                return Response(exc.body(), exc.status, exc.headers, media_type=JSON)
            except ClientDisconnect:
                log.debug("HTTP %s %s: the client left before its body was in", request.method, request.url.path)
                return Response(b"", 499)  # nobody reads it; uvicorn drops it
            except HotswapError as exc:
                error = from_hotswap(exc)
                return Response(error.body(), error.status, error.headers, media_type=JSON)
            except Exception as exc:  # noqa: BLE001 -- an answer, never a trace or a hung connection
                log.exception("HTTP %s %s failed", request.method, request.url.path)
                error = ApiError(500, f"internal error: {type(exc).__name__}", "server_error", code="internal_error")
                return Response(error.body(), 500, media_type=JSON)

        return route

    async def embeddings(request: Request) -> Response:
        parsed = parse_embeddings(await _body(request, max_body, settings.read_timeout_seconds))
        seconds = _timeout(request, timeout)
        calibrated = parsed.dtype in CALIBRATED
        options: dict[str, Any] = {"deadline_ms": int(seconds * 1000), "count_tokens": True, **_sticky(request), **({"prompt": parsed.prompt} if parsed.prompt else {})}
        if calibrated:
            options["ranges"] = True  # the version's int8/uint8 calibration comes with the rows
        payload = [_utf8(text, index) for index, text in enumerate(parsed.texts)]
        head, frames = await bridge.request("encode", timeout=seconds, model=parsed.model, options=options, payload=payload, gone=_disconnected(request))
        vectors = np.frombuffer(frames[0], dtype=VECTOR_DTYPE).reshape(int(head["count"]), int(head["dim"]))
        vectors = shaped(vectors, parsed.dimensions, bool(head.get("normalized")))
        if parsed.dtype != "float32":
            if calibrated and parsed.dimensions not in (None, int(head["dim"])):
                raise ApiError(400, "int8/uint8 are calibrated on whole vectors: give 'dimensions' or 'embedding_dtype', not both", param="embedding_dtype")
            vectors = quantize(vectors, parsed.dtype, np.asarray(head["ranges"], dtype=np.float32) if calibrated else None)
        name = f"{head['model']}@{head['version']}"
        headers = {
            **_version_headers(head),
            # Texts over the version's maximum tokens (long_text): never cut without a word.
            "X-Hotswap-Truncated": str(head.get("truncated", 0)),
            "X-Hotswap-Chunked": str(head.get("chunked", 0)),
            # usage.prompt_tokens counts what the model read; the tokens truncation dropped:
            "X-Hotswap-Tokens-Cut": str(head.get("tokens_cut", 0)),
            **({"X-Hotswap-Calibration": str(head["calibration"])} if calibrated else {}),
        }
        return Response(embeddings_body(vectors, parsed.encoding_format, name, head.get("tokens")), 200, headers, media_type=JSON)

    async def search(request: Request) -> Response:
        parsed = parse_search(await _body(request, max_body, settings.read_timeout_seconds))
        seconds = _timeout(request, timeout)
        options = {**_sticky(request), "deadline_ms": int(seconds * 1000), "k": parsed.k, **({"exact": True} if parsed.exact else {}),
                   **({"precision": parsed.precision} if parsed.precision else {})}
        payload = [_utf8(text, index) for index, text in enumerate(parsed.queries)]
        if parsed.rerank is not None:
            options["k"] = max(parsed.k, parsed.candidates)
        head, _ = await bridge.request("search", timeout=seconds, model=parsed.model, options=options, payload=payload, gone=_disconnected(request))
        if parsed.rerank is None or not head["results"][0]:
            return Response(orjson.dumps(search_body(head)), 200, _version_headers(head), media_type=JSON)
        texts = [hit.get("text") for hit in head["results"][0]]
        if any(text is None for text in texts):
            raise ApiError(409, "the corpus keeps no texts (built with --no-texts): there is nothing to rerank", code="corpus_unavailable", param="rerank")
        rerank_options = {**_sticky(request), "deadline_ms": int(seconds * 1000), "top_n": parsed.k}
        scored, _ = await bridge.request("rerank", timeout=seconds, model=parsed.rerank, options=rerank_options,
                                         payload=[_utf8(text, 0) for text in [parsed.queries[0], *texts]], gone=_disconnected(request))
        headers = {**_version_headers(head), "X-Hotswap-Reranker": f"{scored['model']}@{scored['version']}"}
        return Response(orjson.dumps(search_body(reranked(head, scored, parsed.k), scored)), 200, headers, media_type=JSON)

    async def rerank(request: Request, parse: Callable[[bytes], RerankRequest], shape: Callable[[dict[str, Any], RerankRequest], Any]) -> Response:
        parsed = parse(await _body(request, max_body, settings.read_timeout_seconds))
        seconds = _timeout(request, timeout)
        options: dict[str, Any] = {**_sticky(request), "deadline_ms": int(seconds * 1000), "count_tokens": True}
        options.update({"top_n": parsed.top_n} if parsed.top_n else {}, **({"raw_scores": True} if parsed.raw_scores else {}))
        payload = [_utf8(text, index - 1, "query" if index == 0 else "documents") for index, text in enumerate([parsed.query, *parsed.documents])]
        head, _ = await bridge.request("rerank", timeout=seconds, model=parsed.model, options=options, payload=payload, gone=_disconnected(request))
        return Response(orjson.dumps(shape(head, parsed)), 200, _version_headers(head), media_type=JSON)

    async def rerank_cohere(request: Request) -> Response:
        return await rerank(request, parse_cohere, cohere_body)

    async def rerank_tei(request: Request) -> Response:
        return await rerank(request, parse_tei, tei_body)

    async def cohere_embed(request: Request) -> Response:
        parsed = parse_cohere_embed(await _body(request, max_body, settings.read_timeout_seconds))
        seconds = _timeout(request, timeout)
        calibrated = any(kind in CALIBRATED for kind in parsed.types)
        options: dict[str, Any] = {"deadline_ms": int(seconds * 1000), "count_tokens": True, **_sticky(request), **({"ranges": True} if calibrated else {})}
        payload = [_utf8(text, index) for index, text in enumerate(parsed.texts)]
        head, frames = await bridge.request("encode", timeout=seconds, model=parsed.model, options=options, payload=payload, gone=_disconnected(request))
        vectors = np.frombuffer(frames[0], dtype=VECTOR_DTYPE).reshape(int(head["count"]), int(head["dim"]))
        vectors = shaped(vectors, parsed.dimensions, bool(head.get("normalized")))
        if calibrated and parsed.dimensions not in (None, int(head["dim"])):
            raise ApiError(400, "int8/uint8 are calibrated on whole vectors: give 'output_dimension' or those types, not both", param="embedding_types")
        ranges = np.asarray(head["ranges"], dtype=np.float32) if calibrated else None
        embeddings: dict[str, Any] = {}
        for kind in parsed.types:
            if kind == "base64":  # Cohere's: the float rows' bytes
                embeddings[kind] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
            else:
                embeddings[kind] = list(quantize(vectors, "float32" if kind == "float" else kind, ranges if kind in CALIBRATED else None))
        body = {"id": str(uuid.uuid4()), "embeddings": embeddings, "texts": parsed.texts, "response_type": "embeddings_by_type",
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": head.get("tokens") or 0}}}
        headers = {**_version_headers(head), **({"X-Hotswap-Calibration": str(head["calibration"])} if calibrated else {})}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), 200, headers, media_type=JSON)

    async def tokenize(request: Request) -> Response:
        parsed = parse_tokenize(await _body(request, max_body, settings.read_timeout_seconds))
        seconds = _timeout(request, timeout)
        options: dict[str, Any] = {**_sticky(request), "details": True, **({"prompt": parsed.prompt} if parsed.prompt else {})}
        payload = [_utf8(text, index) for index, text in enumerate(parsed.texts)]
        head, _ = await bridge.request("tokens", timeout=seconds, model=parsed.model, options=options, payload=payload, gone=_disconnected(request))
        return Response(orjson.dumps(head["details"]), 200, _version_headers(head), media_type=JSON)

    def _sticky(request: Request) -> dict[str, str]:
        key = request.headers.get(settings.sticky_header)
        if not key:
            return {}
        if len(key) > MAX_KEY_CHARS:
            raise ApiError(400, f"{settings.sticky_header} is longer than {MAX_KEY_CHARS} characters", param=settings.sticky_header)
        return {"key": key}

    async def models(request: Request) -> Response:
        head, _ = await bridge.request("models", timeout=timeout)
        data = []
        for row in head["models"]:
            data.append({"id": row["name"], "object": "model", "created": 0, "owned_by": "hotswap"})
            for item in row.get("version_detail", []):
                if item.get("state") == "loaded":
                    data.append({"id": f"{row['name']}@{item['version']}", "object": "model", "created": 0, "owned_by": "hotswap"})
        return Response(orjson.dumps({"object": "list", "data": data}), 200, media_type=JSON)

    async def health(request: Request) -> Response:
        # {"status": phase, ...}; a fleet member adds its link to etcd (degraded, since when):
        # it still serves its last committed state, so a load balancer keeps it (200).
        facts = health_facts()
        return Response(orjson.dumps(facts), 200 if facts["status"] == "ready" else 503, media_type=JSON)

    async def metrics(request: Request) -> Response:
        head, _ = await bridge.request("metrics", timeout=timeout)
        return Response(head["text"], 200, media_type="text/plain; version=0.0.4; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # for a stop asked from another thread
        await bridge.start()
        try:
            yield
        finally:
            await bridge.close()

    routes = [
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/embeddings", guarded(embeddings), methods=["POST"]),  # clients configured without /v1
        Route("/v1/search", guarded(search), methods=["POST"]),  # a version's corpus (hotswapd.corpus)
        # A rerank version's scores: Cohere / Jina / Infinity / vLLM's shape (Cohere's SDK
        # posts to /v2/rerank), and Text Embeddings Inference's (hotswapd.http.rerank_api).
        Route("/v1/rerank", guarded(rerank_cohere), methods=["POST"]),
        Route("/v2/rerank", guarded(rerank_cohere), methods=["POST"]),
        Route("/rerank", guarded(rerank_tei), methods=["POST"]),
        Route("/tokenize", guarded(tokenize), methods=["POST"]),  # TEI's: a version's own tokens, no model run
        Route("/v2/embed", guarded(cohere_embed), methods=["POST"]),  # Cohere's: several embedding types at once
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/health", guarded(health, public=True), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
    ]
    middleware = []
    if settings.cors_origins:  # preflights and response headers for the pages the config names
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", settings.sticky_header], expose_headers=EXPOSED, max_age=600,
        ))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware, exception_handlers={404: _not_found, 405: _wrong_method, Exception: _failed})
    app.router.redirect_slashes = False  # "/v1/embeddings/" is a 404 in OpenAI's shape, not a 307 to follow
    app.state.bridge = bridge
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    error = ApiError(404, f"no route {request.method} {request.url.path[:200]}: the routes are /v1/embeddings, /v1/search, /v1/models, /health, /metrics", code="not_found")
    return Response(error.body(), 404, media_type=JSON)


async def _failed(request: Request, exc: Exception) -> Response:
    """What escaped the routes (they answer everything themselves: a bug or a middleware's
    failure), in OpenAI's shape rather than Starlette's plain-text 500."""
    if isinstance(exc, RuntimeError) and "closed" in str(exc):  # an answer to a client that has gone: nothing to say
        log.debug("HTTP %s %s: the client had gone: %s", request.method, request.url.path[:200], exc)
    else:
        log.error("HTTP %s %s: %s: %s", request.method, request.url.path[:200], type(exc).__name__, exc)
    error = ApiError(500, f"internal error: {type(exc).__name__}", "server_error", code="internal_error")
    return Response(error.body(), 500, media_type=JSON)


async def _wrong_method(request: Request, exc: Exception) -> Response:
    allowed = getattr(exc, "headers", None) or {}
    error = ApiError(405, f"{request.url.path[:200]} does not take {request.method}", code="method_not_allowed", headers=dict(allowed))
    return Response(error.body(), 405, error.headers, media_type=JSON)


class BrowserRules:
    """What keeps a web page the user happens to visit from using the endpoint.

    - ``Host`` must name this endpoint: its listen address, a loopback name when it listens
      on loopback, or ``[http] allowed_hosts``; otherwise 421. A DNS-rebinding page reaches
      127.0.0.1 under its own name, and is refused here.
    - A request with an ``Origin`` (a browser sends it from a page's script) is refused 403
      unless ``[http] cors_origins`` names that page's origin.
    - A body must be ``application/json``: a browser sends text/plain or a form without
      asking first (a CORS "simple request"), never JSON; refused 415.
    """

    def __init__(self, settings: HttpConfig) -> None:
        host, _ = parse_listen(settings.listen) if settings.listen else ("127.0.0.1", 0)
        self._any_host = not is_loopback(host) and not settings.allowed_hosts  # reached by any name; keys guard it
        self._hosts = {host.lower(), *(name.lower() for name in settings.allowed_hosts)}
        if is_loopback(host):
            self._hosts |= LOOPBACK_NAMES
        self._origins = set(settings.cors_origins)

    def check(self, request: Request) -> None:
        host = _host_name(request.headers.get("host", ""))
        if not self._any_host and host not in self._hosts:
            raise ApiError(421, f"this endpoint is not reached by the name {host[:100]!r} (http.allowed_hosts)", code="misdirected_request")
        origin = request.headers.get("origin")
        if origin is not None and "*" not in self._origins and origin not in self._origins:
            raise ApiError(403, f"requests from web pages at {origin[:200]!r} are refused (http.cors_origins)", code="origin_not_allowed")
        if request.method == "POST":
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != JSON:
                raise ApiError(415, f"the body must be {JSON} (Content-Type: {media or 'none'})", param="Content-Type", code="unsupported_media_type")


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EXPOSED = ["X-Hotswap-Model", "X-Hotswap-Version", "X-Hotswap-Fingerprint", "X-Hotswap-Generation", "X-Hotswap-Truncated", "X-Hotswap-Chunked", "X-Hotswap-Tokens-Cut"]


def _host_name(value: str) -> str:
    """The name in a Host header, lower case, without its port ("[::1]:8080" -> "::1")."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, _, port = value.rpartition(":")
    return name if name and port.isdigit() else value


async def _body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refused (413) as soon as it passes ``limit``: never read whole first; and
    408 when it is too slow: it has ``seconds``, plus a second for each MIN_BODY_RATE bytes
    that arrived (an honest slow upload goes on, a trickle of a byte now and then does not)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; the limit is {limit} (http.max_body_mb)", code="request_too_large", headers=CLOSE)
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(seconds) as deadline:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the body passed {limit} bytes (http.max_body_mb)", code="request_too_large", headers=CLOSE)
                chunks.append(chunk)
                deadline.reschedule(started + seconds + size / MIN_BODY_RATE)
    except TimeoutError:
        raise ApiError(408, f"the body came too slowly (http.read_timeout_seconds: {seconds:g} s, then {MIN_BODY_RATE // 1024} KiB/s)",
                       code="request_timeout", headers=CLOSE) from None
    return b"".join(chunks)


TIMEOUT_HEADER = "x-request-timeout"
# What the openai package sends of its own read timeout (600 s unless its caller sets one):
# past it, nobody reads the answer, so the work is dropped then.
OPENAI_TIMEOUT_HEADER = "x-stainless-read-timeout"


def _timeout(request: Request, ceiling: float) -> float:
    """The request's deadline in seconds: ``X-Request-Timeout`` (refused with a 400 if it is
    not a positive number), else the openai package's own read timeout, never past the
    server's ``http.timeout_seconds``. Past it, the work not yet run is dropped."""
    given = request.headers.get(TIMEOUT_HEADER)
    if given is not None:
        seconds = _seconds(given)
        if seconds is None:
            raise ApiError(400, f"X-Request-Timeout must be a positive number of seconds, not {given[:40]!r}", param="X-Request-Timeout")
        return min(seconds, ceiling)
    seconds = _seconds(request.headers.get(OPENAI_TIMEOUT_HEADER, ""))  # malformed: ignored, as any unknown header
    return min(seconds, ceiling) if seconds is not None else ceiling


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.001 <= value < float("inf") else None


async def _disconnected(request: Request) -> None:
    """Completes when the client closes its connection (its body is read by now, so the
    next message uvicorn hands the app is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _version_headers(head: dict[str, Any]) -> dict[str, str]:
    """Which version answered, so every vector and every score stays traceable."""
    headers = {"X-Hotswap-Model": head["model"], "X-Hotswap-Version": head["version"], "X-Hotswap-Fingerprint": str(head.get("fingerprint"))}
    if isinstance(head.get("generation"), int):  # a fleet member: the fleet change this answer was routed under
        headers["X-Hotswap-Generation"] = str(head["generation"])
    return headers


def _utf8(text: str, index: int, field: str = "input") -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON (\ud800)
        where = f"'{field}'" if index < 0 else f"'{field}'[{index}]"
        raise ApiError(400, f"{where} is not valid Unicode (a lone surrogate)", param=field) from None
