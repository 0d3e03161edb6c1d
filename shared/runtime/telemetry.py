"""Structured logging (structlog): JSON lines in production, readable output on a terminal, each line
tagged with its service and, inside a span, its trace and span ids (see :mod:`shared.messaging.tracing`)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import structlog

from shared.messaging import tracing

if TYPE_CHECKING:
    from shared.config import Settings


def configure(service: str, settings: Settings) -> None:
    """Logs and traces of a service process, as its settings ask (call once, first thing in ``main``)."""
    configure_logging(service, level=settings.log_level, json=settings.log_json)
    tracing.configure_tracing(service, exporter=settings.otel_traces_exporter)


def configure_logging(service: str, *, level: str = "INFO", json: bool | None = None) -> None:
    """Route structlog and stdlib logging to stderr, one event per line, tagged with ``service``."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        _add_trace_ids,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=processors,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "urllib3", "sentence_transformers", "transformers", "faiss", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _add_trace_ids(_logger: object, _name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """``trace_id`` and ``span_id`` of the span in effect, so a log line leads to its trace (and back)."""
    for name, value in tracing.ids().items():
        event.setdefault(name, value)
    return event


def _add_service(service: str) -> structlog.typing.Processor:
    def processor(_logger: object, _name: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.setdefault("service", service)
        return event

    return processor
