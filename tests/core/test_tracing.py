"""OpenTelemetry tracing (issue 18, item 5), with the SDK's in-memory exporter: one span per
request with its model, version, timings and texts, continuing the caller's trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hotswapd.errors import RequestError
from hotswapd.tracing import setup
from tests.core.conftest import StartDaemon
from tests.inproc import fake_config


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    setup.install(provider)
    yield exporter
    setup.install(None)


def _served(exporter: InMemorySpanExporter) -> list:  # type: ignore[type-arg]
    return [span for span in exporter.get_finished_spans() if span.name.startswith("hotswapd.")]


def test_a_request_is_one_span_with_its_model_version_texts_and_timings(start: StartDaemon, tmp_path: Path, exported: InMemorySpanExporter) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        result = client.encode(["hello world", "a second text"], "m")
        [span] = _served(exported)
        facts = dict(span.attributes)
        assert span.name == "hotswapd.encode" and span.kind == trace.SpanKind.SERVER
        assert facts["hotswap.model"] == "m" and facts["hotswap.version"] == "v1" and facts["hotswap.texts"] == 2
        assert facts["hotswap.fingerprint"] == result.fingerprint and facts["hotswap.cached"] == 0
        assert facts["hotswap.queue_ms"] >= 0 and facts["hotswap.inference_ms"] >= 0
        assert facts["hotswap.batch_texts"] == 2 and facts["hotswap.batch_requests"] == 1
        assert span.parent is None  # no caller trace: a trace of its own


def test_the_callers_trace_continues_into_the_daemon(start: StartDaemon, tmp_path: Path, exported: InMemorySpanExporter) -> None:
    caller = TracerProvider().get_tracer("a script")
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        with caller.start_as_current_span("my batch job") as parent:
            client.encode(["hello"], "m")
        [span] = _served(exported)
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id


def test_a_failed_request_ends_its_span_with_the_error_and_a_bad_traceparent_is_ignored(start: StartDaemon, tmp_path: Path, exported: InMemorySpanExporter) -> None:
    with start(fake_config(tmp_path, {"v1": {}})) as inproc, inproc.client() as client:
        with pytest.raises(RequestError):
            client.encode(["x"], "m", prompt="nope")
        [span] = _served(exported)
        assert span.status.status_code == trace.StatusCode.ERROR and span.attributes["hotswap.error"] == "bad_request"
        head, _ = client.request("encode", model="m", options={"traceparent": "00-zz-not-a-trace"}, payload=[b"x"])
        assert head["count"] == 1  # served; its span starts a trace of its own
        assert _served(exported)[-1].parent is None


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert setup.wanted({}) is None
    assert setup.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None
    assert setup.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == "otlp"
    assert setup.wanted({"OTEL_TRACES_EXPORTER": "console"}) == "console"
    assert setup.wanted({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None


def test_stopping_waits_for_an_unreachable_collector_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: each pending batch waited out the exporter's timeout; 3,000 requests to an
    unanswering collector held the daemon 30 s past its stop."""
    import time

    from opentelemetry.sdk.trace import SpanProcessor

    class Flushing(SpanProcessor):  # a batch processor whose export never gets an answer
        def shutdown(self) -> None:
            time.sleep(30)

    provider = TracerProvider()
    provider.add_span_processor(Flushing())
    setup.install(provider)
    monkeypatch.setattr(setup, "SHUTDOWN_SECONDS", 0.5)
    started = time.monotonic()
    setup.shutdown()
    assert time.monotonic() - started < 2 and not setup.spans.enabled()
    assert setup.wanted({"OTEL_TRACES_EXPORTER": "zipkin,console"}) == "console"  # a list: the first it has
