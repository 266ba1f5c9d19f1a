"""Runs the examples end to end and asserts their traces (used by .ci/run).

  python3 -m venv .venv && .venv/bin/pip install -r examples/requirements.txt
  .venv/bin/python examples/check.py target/debug/tracegate

1. examples/chained: client -> tracegate (frontend) -> frontend service (docker/frontend/app.py,
   no tracing library, forwards traceparent) -> tracegate (legacy) -> legacy service (tracegate
   echo). Asserts one connected trace: four spans from two tracegates, each hop's SERVER span
   the child of the previous hop's CLIENT span.
2. examples/python-app: client -> tracegate -> a Python app using the OpenTelemetry SDK.
   Asserts the app's own spans join tracegate's trace, under tracegate's CLIENT span.
3. OTLP/gRPC to another gRPC implementation than the test suite's tonic: a grpcio (gRPC
   C-core) receiver that answers the first export UNAVAILABLE. Asserts the batch is retried
   and arrives (sent gzip-compressed, which the receiver inflates) with the configured
   metadata.

The OTLP receivers are real: OTLP/HTTP protobuf on 127.0.0.1:14318, decoded with the
opentelemetry-proto package, and OTLP/gRPC on 127.0.0.1:14317 (grpcio).
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SPANS = []  # (service.name, span) pairs
LOCK = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        ok = self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf"
        if ok:
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            with LOCK:
                for rs in req.resource_spans:
                    service = next(
                        (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                        "",
                    )
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            SPANS.append((service, span))
        data = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if ok else 400)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC on grpcio: the first call is answered UNAVAILABLE, the rest are kept."""

    def __init__(self):
        self.calls = []  # (metadata, spans) of each call, failed ones included

    def Export(self, request, context):
        metadata = dict(context.invocation_metadata())
        spans = [(rs, s) for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        with LOCK:
            self.calls.append((metadata, [s for _, s in spans]))
            first = len(self.calls) == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        with LOCK:
            for rs, span in spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                    "",
                )
                SPANS.append((service, span))
        return ExportTraceServiceResponse()


GRPC_CONFIG = """
listeners: [{ address: 127.0.0.1:18095 }]
admin: { address: 127.0.0.1:18096 }
upstreams: [{ name: echo, endpoints: [http://127.0.0.1:18002] }]
routes: [{ upstream: echo }]
tracing: { service_name: grpc-export }
export:
  protocol: grpc
  endpoint: http://127.0.0.1:14317
  compression: gzip
  batch_delay: 50ms
  headers: { x-tenant: acme }
"""


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit("nothing answered on " + url)


def spans_of(trace_id, n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with LOCK:
            found = [(svc, s) for svc, s in SPANS if s.trace_id.hex() == trace_id]
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise SystemExit("trace %s: %d spans arrived, expected %d" % (trace_id, len(found), n))


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers, r.read()


def main(binary):
    server = ThreadingHTTPServer(("127.0.0.1", 14318), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    procs = []

    def start(*args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        procs.append(subprocess.Popen(args, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        # 1. two services chained, each behind its own tracegate
        start(binary, "echo", "--listen", "127.0.0.1:18002")
        start(binary, "run", "--config", os.path.join(HERE, "chained", "legacy-tracegate.yaml"))
        start(sys.executable, os.path.join(ROOT, "docker", "frontend", "app.py"),
              env={"PORT": "18001", "LEGACY_URL": "http://127.0.0.1:18081"})
        start(binary, "run", "--config", os.path.join(HERE, "chained", "frontend-tracegate.yaml"))
        for url in ("http://127.0.0.1:18070/readyz", "http://127.0.0.1:18071/readyz"):
            wait_http(url)
        wait_http("http://127.0.0.1:18001/")
        status, headers, body = get("http://127.0.0.1:18080/checkout/42")
        assert status == 200, (status, body)
        trace_id = headers["x-trace-id"]
        spans = spans_of(trace_id, 4)
        by = {(svc, s.kind): s for svc, s in spans}
        SERVER, CLIENT = 2, 3
        fs, fc = by[("frontend", SERVER)], by[("frontend", CLIENT)]
        ls, lc = by[("legacy-orders", SERVER)], by[("legacy-orders", CLIENT)]
        assert fc.parent_span_id == fs.span_id, "frontend CLIENT under its SERVER"
        assert ls.parent_span_id == fc.span_id, "legacy SERVER under frontend CLIENT"
        assert lc.parent_span_id == ls.span_id, "legacy CLIENT under its SERVER"
        assert ls.name == "GET /orders/{id}", ls.name
        print("chained: one trace %s across two services: %s" % (
            trace_id, ", ".join("%s %s" % (svc, s.name) for svc, s in spans)))

        # 2. a Python app with the OpenTelemetry SDK behind tracegate
        start(sys.executable, os.path.join(HERE, "python-app", "app.py"), "18003",
              env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:14318/v1/traces"})
        start(binary, "run", "--config", os.path.join(HERE, "python-app", "tracegate.yaml"))
        wait_http("http://127.0.0.1:18091/readyz")
        wait_http("http://127.0.0.1:18003/")
        status, headers, body = get("http://127.0.0.1:18090/hello")
        assert status == 200 and json.loads(body)["hello"] == "from python", body
        trace_id = headers["x-trace-id"]
        spans = spans_of(trace_id, 4)
        gw_client = next(s for svc, s in spans if svc == "python-app-gateway" and s.kind == 3)
        app_server = next(s for svc, s in spans if svc == "python-app" and s.kind == 2)
        app_inner = next(s for svc, s in spans if svc == "python-app" and s.name == "compute-answer")
        assert app_server.parent_span_id == gw_client.span_id, "the app's span is under tracegate's CLIENT span"
        assert app_inner.parent_span_id == app_server.span_id
        print("python-app: the SDK's spans joined trace %s under tracegate's CLIENT span" % trace_id)

        # 3. OTLP/gRPC export to a grpcio receiver, gzip and metadata, the first call refused
        receiver = GrpcReceiver()
        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, grpc_server)
        grpc_server.add_insecure_port("127.0.0.1:14317")
        grpc_server.start()
        config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        config.write(GRPC_CONFIG)
        config.close()
        try:
            start(binary, "run", "--config", config.name)
            wait_http("http://127.0.0.1:18096/readyz")
            status, headers, body = get("http://127.0.0.1:18095/grpc-export")
            assert status == 200, (status, body)
            trace_id = headers["x-trace-id"]
            spans = spans_of(trace_id, 2)
            assert {s.kind for _, s in spans} == {2, 3}, "a SERVER and a CLIENT span"
            with LOCK:
                calls = list(receiver.calls)
            first, second = calls[0], calls[1]
            ids = lambda call: sorted(s.span_id for s in call[1])
            assert ids(first) == ids(second), "the refused batch was sent again"
            for metadata, _ in calls:
                assert metadata.get("x-tenant") == "acme", metadata
                assert metadata.get("user-agent", "").startswith("tracegate/"), metadata
            print("grpc: trace %s exported to grpcio %s (retried after UNAVAILABLE, gzip, metadata)" % (
                trace_id, grpc.__version__))
        finally:
            grpc_server.stop(None)
            os.unlink(config.name)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        server.shutdown()


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "tracegate")))
