"""A small OTLP/HTTP trace receiver for the tests: what the services export, decoded with ``opentelemetry-proto``."""

from __future__ import annotations

import asyncio
import gzip
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from semaflow.redis_server import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as exported."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, str]


@dataclass
class OtlpReceiver:
    """Listens on 127.0.0.1 at ``/v1/traces`` (the OTLP/HTTP path the exporters append)."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=attrs.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: str(a.value.string_value or a.value.int_value) for a in span.attributes},
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace received so far."""
        return [s for s in self.spans if s.trace_id == trace_id]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(
        self, trace_id: str, names: set[str] | dict[str, int], timeout_s: float = 60.0
    ) -> list[ReceivedSpan]:
        """Wait until spans of every name in ``names`` arrived for ``trace_id`` (as many as a dict asks)."""
        wanted = names if isinstance(names, dict) else dict.fromkeys(names, 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = self.of_trace(trace_id)
            counts = Counter(s.name for s in found)
            missing = {name: n for name, n in wanted.items() if counts[name] < n}
            if not missing:
                return found
            if loop.time() > deadline:
                raise AssertionError(f"trace {trace_id}: still short of {missing}; got {dict(counts)}")
            await asyncio.sleep(0.1)
