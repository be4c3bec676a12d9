"""OpenTelemetry tracing of requests (the `otel` extra); off unless the standard OTEL_*
variables ask for it.

One span per encode or search request, ``hotswapd.encode`` / ``hotswapd.search``, a child
of the caller's span when the request carries a W3C ``traceparent`` (the client sends its
current span's when the caller uses OpenTelemetry), with the model, version, fingerprint,
texts, tokens, cache hits and the request's queue wait and inference time. Nothing is
imported, and nothing costs, while tracing is off.

- :mod:`setup`: turning it on from the environment (or a test's provider).
- :mod:`spans`: starting and finishing a request's span.
"""
