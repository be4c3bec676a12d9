"""The caller's trace context, for the client to send with a request (W3C traceparent).

Only when the calling program already uses OpenTelemetry (its API is imported) and a span is
recording: the client itself never imports it, so `hs` and plain scripts pay nothing.
"""

from __future__ import annotations

import sys
from typing import Any


def current_traceparent() -> dict[str, Any]:
    """``{"traceparent": ...}`` of the caller's current span, or ``{}``."""
    if "opentelemetry.trace" not in sys.modules:
        return {}
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {"traceparent": carrier["traceparent"]} if "traceparent" in carrier else {}
