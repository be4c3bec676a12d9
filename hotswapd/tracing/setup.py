"""Tracing on or off, from the standard OpenTelemetry environment variables.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``), or an OTLP
endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
and ``OTEL_SDK_DISABLED`` is not ``true``. The service is ``OTEL_SERVICE_NAME`` or
``hotswapd``; the OTLP exporter reads its own variables (headers, protocol, timeout).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hotswapd.tracing import spans

log = logging.getLogger(__name__)


def wanted(environ: dict[str, str] | None = None) -> str | None:
    """The exporter the environment asks for, or None when tracing stays off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return None if exporter == "none" else exporter
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return None


def configure_from_environment() -> bool:
    """Turn tracing on if the environment asks; False (with the reason logged) otherwise."""
    exporter_name = wanted()
    if exporter_name is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.error("OTEL_* asks for tracing but the OpenTelemetry SDK is not installed: pip install 'hotswap[otel]'")
        return False
    try:
        exporter = _exporter(exporter_name)
    except ImportError:
        log.error("OTEL_TRACES_EXPORTER=%s needs its exporter package: pip install 'hotswap[otel]'", exporter_name)
        return False
    if exporter is None:
        log.error("OTEL_TRACES_EXPORTER=%s is not an exporter hotswapd knows (otlp, console, none)", exporter_name)
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "hotswapd"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # exports off the request path
    install(provider)
    log.info("tracing: on, exporting to %s", exporter_name)
    return True


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


_provider: Any = None


def install(provider: Any) -> None:
    """Trace requests with ``provider`` (a configured SDK TracerProvider); None turns it off."""
    global _provider
    _provider = provider
    spans.use(provider.get_tracer("hotswapd") if provider is not None else None)


def shutdown() -> None:
    """Export what is batched and stop (at the daemon's exit)."""
    if _provider is not None:
        _provider.shutdown()
        install(None)
