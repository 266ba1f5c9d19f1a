"""The second service: it calls the legacy service through the legacy service's tracegate.

It has no tracing library either; it only forwards the W3C trace headers it received
(traceparent, tracestate, baggage) on its outgoing call, as many services already forward
request ids. That is enough for its tracegate and the legacy service's tracegate to make
one trace across both services.

GET /checkout/<id> -> calls LEGACY_URL/orders/<id>
GET /report        -> calls LEGACY_URL/slow
GET /broken        -> calls LEGACY_URL/fail
"""
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEGACY = os.environ.get("LEGACY_URL", "http://legacy-proxy:8080")
FORWARDED = ("traceparent", "tracestate", "baggage", "x-request-id")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/checkout/"):
            target = "/orders/" + self.path.rsplit("/", 1)[-1]
        elif self.path == "/report":
            target = "/slow"
        elif self.path == "/broken":
            target = "/fail"
        else:
            target = "/"
        req = urllib.request.Request(LEGACY + target)
        for name in FORWARDED:
            if self.headers.get(name):
                req.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status, body = resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            status, body = 502, {"error": "legacy answered %d" % e.code}
        data = json.dumps({"frontend": "ok" if status < 400 else "failed", "legacy": body}).encode()
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
