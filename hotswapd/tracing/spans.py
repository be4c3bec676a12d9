"""A request's span: started when the request is accepted, finished with its answer."""

from __future__ import annotations

import re
from typing import Any

# W3C trace context: version-traceid-spanid-flags, lower-case hex.
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")

_tracer: Any = None


def use(tracer: Any) -> None:
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


def start(op: str, traceparent: str | None, attributes: dict[str, Any]) -> Any:
    """A started span for a request, the caller's span its parent; None while tracing is off."""
    tracer = _tracer
    if tracer is None:
        return None
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    return tracer.start_span(f"hotswapd.{op}", context=parent, kind=SpanKind.SERVER, attributes=_clean(attributes))


def finish(span: Any, attributes: dict[str, Any], error: BaseException | None = None) -> None:
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(_clean(attributes))
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))
        code = getattr(error, "code", None)
        if code:
            span.set_attribute("hotswap.error", str(code))
    span.end()


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}
