"""A "legacy" service with no tracing at all: standard library only, no OpenTelemetry.

GET /orders/<id>  -> JSON order
GET /slow         -> answers after 800 ms (kept by the collector's latency policy)
GET /fail         -> 500 (kept by the collector's error policy)
"""
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/fail":
            return self.answer(500, {"error": "the legacy database is down"})
        if self.path == "/slow":
            time.sleep(0.8)
            return self.answer(200, {"report": "done"})
        if self.path.startswith("/orders/"):
            order = self.path.rsplit("/", 1)[-1]
            return self.answer(200, {"order": order, "status": "shipped"})
        return self.answer(200, {"service": "legacy", "path": self.path})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
