"""Distributed tracing (OpenTelemetry): one trace per request, carried between processes as W3C ``traceparent``.

A service turns tracing on at start (:func:`configure_tracing`); the exporter, its endpoint and the
sampler come from the standard ``OTEL_*`` variables. Off, every helper here is a cheap no-op, so the
code paths are the same either way. Context crosses process boundaries in three carriers: Dramatiq
message options (``traceparent``), work-queue entries (the token that runs an entry is not the
one its sender sent), and the CloudEvents envelope's ``traceparent`` extension.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = structlog.get_logger(__name__)

TRACEPARENT: Final = "traceparent"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_TRACER_NAME: Final = "semaflow"


class _State:
    """Whether this process exports spans (set once, by :func:`configure_tracing`)."""

    enabled = False


_state = _State()


def configure_tracing(service: str, *, exporter: str | None) -> bool:
    """Install an SDK tracer provider exporting over OTLP/HTTP when ``exporter`` is ``otlp``.

    The service name defaults to ``semaflow-{service}`` (``OTEL_SERVICE_NAME`` overrides it); the
    endpoint, headers, timeouts and sampler are the SDK's own ``OTEL_*`` settings. Returns whether
    tracing is on.
    """
    if (exporter or "").strip().lower() != "otlp":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource({"service.name": f"semaflow-{service}", "service.namespace": "semaflow"}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _state.enabled = True
    log.info("tracing.enabled", exporter="otlp")
    return True


def tracer() -> trace.Tracer:
    """semaflow's tracer (a no-op one while tracing is off)."""
    return trace.get_tracer(_TRACER_NAME)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span in effect, to hand to another process (None outside a span)."""
    if not _state.enabled and not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The remote parent a ``traceparent`` names (None for none, or one that cannot be read)."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def from_headers(headers: Mapping[str, str]) -> otel_context.Context | None:
    """The remote parent an incoming request's ``traceparent`` header names."""
    return context_of(headers.get(TRACEPARENT))


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str | otel_context.Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span around a block, child of ``parent`` (a ``traceparent``, a context, or the current span).

    An exception escaping the block marks the span as failed (and is re-raised).
    """
    if not _state.enabled:
        # Off: no span, and nothing to carry (what is on the hot paths costs next to nothing).
        yield trace.INVALID_SPAN
        return
    ctx = context_of(parent) if isinstance(parent, str) else parent
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer().start_as_current_span(name, context=ctx, kind=kind, attributes=attrs) as current:
        yield current


def fail(current: Span, error: BaseException | str) -> None:
    """Mark a span as failed without an exception escaping it."""
    current.set_status(Status(StatusCode.ERROR, str(error)[:200]))


def ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the span in effect, for log lines (empty outside a span)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
