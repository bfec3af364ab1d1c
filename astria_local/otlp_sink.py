"""A throwaway OpenTelemetry collector on loopback: takes OTLP/HTTP trace exports (`POST
/v1/traces`, protobuf, as the SDK's exporter sends them) and keeps the spans, decoded, for the
process-level tracing test and the benchmark's tracing row. Needs the `otel` extra."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class SinkSpan:
    name: str
    trace_id: str  #: hex, as in a traceparent
    span_id: str
    parent_id: str  #: '' for a root span
    attributes: dict[str, Any]


class OtlpSink:
    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[SinkSpan] = []
        lock, sink = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                found = [SinkSpan(span.name, span.trace_id.hex(), span.span_id.hex(),
                                  span.parent_span_id.hex(),
                                  {a.key: _value(a.value) for a in span.attributes})
                         for resource in request.resource_spans
                         for scope in resource.scope_spans for span in scope.spans]
                with lock:
                    sink.spans.extend(found)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def of_trace(self, trace_id: str) -> list[SinkSpan]:
        return [span for span in list(self.spans) if span.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _value(value: Any) -> Any:
    """An OTLP AnyValue as Python (strings, numbers, booleans)."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
