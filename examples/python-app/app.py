"""A Python service instrumented with the OpenTelemetry Python SDK, behind tracegate.

It continues the W3C trace context tracegate sends (traceparent), so its own spans join
tracegate's trace, and exports them over OTLP/HTTP itself.

  pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces python app.py 3003
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "python-app"}))
# Simple (one export per span) keeps the example short; use BatchSpanProcessor in production.
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("python-app")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        # The context tracegate injected: its CLIENT span becomes our parent.
        parent = propagate.extract(dict(self.headers.items()))
        with tracer.start_as_current_span(
            "GET " + self.path, context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", "GET")
            span.set_attribute("url.path", self.path)
            with tracer.start_as_current_span("compute-answer"):
                body = json.dumps({"hello": "from python", "path": self.path}).encode()
            span.set_attribute("http.response.status_code", 200)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3003
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
