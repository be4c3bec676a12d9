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
    names = [name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "").lower().split(",") if name.strip()]
    if names:  # a list is allowed; the first one hotswapd has is used
        known = [name for name in names if name in ("otlp", "console")]
        return known[0] if known else (None if names == ["none"] else names[0])
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
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return GrpcExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return None


_provider: Any = None


def install(provider: Any) -> None:
    """Trace requests with ``provider`` (a configured SDK TracerProvider); None turns it off."""
    global _provider
    _provider = provider
    spans.use(provider.get_tracer("hotswapd") if provider is not None else None)


SHUTDOWN_SECONDS = 5.0


def shutdown() -> None:
    """Export what is batched and stop (at the daemon's exit), for SHUTDOWN_SECONDS at most:
    a collector that never answers must not hold the daemon past systemd's stop timeout."""
    import threading

    provider = _provider
    if provider is None:
        return
    install(None)
    flushing = threading.Thread(target=provider.shutdown, name="hotswapd-trace-flush", daemon=True)
    flushing.start()
    flushing.join(SHUTDOWN_SECONDS)
    if flushing.is_alive():
        log.warning("tracing: the collector did not take the last spans within %.0f s; they are dropped", SHUTDOWN_SECONDS)
