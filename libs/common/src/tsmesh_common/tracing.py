"""OpenTelemetry tracing, set up once per process; near-zero cost when no exporter is configured.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans go to that collector over OTLP/gRPC. Without it the
global no-op tracer provider stays in place. Context travels in W3C ``traceparent`` metadata,
injected by the client interceptor and extracted by the server interceptor (and in Kafka headers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace


def setup_tracing(service: str, otlp_endpoint: str | None) -> None:
    """Install an OTLP exporting tracer provider when an endpoint is configured."""
    if not otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"tsmesh-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)


def tracing_enabled() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def inject_headers() -> list[tuple[str, str]]:
    """The current trace context as (key, value) pairs for gRPC metadata or Kafka headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def extract_context(pairs: Iterable[tuple[str, str | bytes]]) -> otel_context.Context:
    carrier: Mapping[str, str] = {
        k.lower(): (v.decode() if isinstance(v, bytes) else v)
        for k, v in pairs
        if k.lower() in ("traceparent", "tracestate")
    }
    return propagate.extract(carrier)
