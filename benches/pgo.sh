#!/usr/bin/env bash
# A profile-guided (PGO) release build of tracegate: build it instrumented, run it under a
# training load on 127.0.0.1, then build it again with what the load measured, so that
# LLVM lays the hot request path out together and inlines by what runs. The result is
# target/pgo/tracegate (the Docker image ships it; benches/proxy/run.sh measures it with
# PGO=1). `cargo build --release` stays the plain build.
#   bash benches/pgo.sh
# Needs wrk (apt-get install wrk) and an llvm-profdata of the LLVM major version rustc was
# built with (`rustc -vV`): `rustup component add llvm-tools`, or Debian's llvm-<major>
# package, or $LLVM_PROFDATA. Uses h2load (nghttp2-client) and openssl when present to
# train HTTP/2 and TLS as well. Builds the plain release binary and the sink (benches/lib.sh)
# when they are not there, then two more release builds (~3-5 min each on 2 cores).
#
# The training load is not the benchmark's: several routes (exact, prefix, regex, catch-all),
# two upstreams (HTTP/1.1 and HTTP/2), incoming W3C, baggage and B3 context or none, GET and
# POST with bodies, JSON access log, HTTP/2 and TLS clients, tracing on and off. A path it
# leaves out is compiled as cold (for size, out of the way): keep the training broad.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/pgo
raw=$PWD/$out/raw

major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=${LLVM_PROFDATA:-}
if [ -z "$profdata" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  for c in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" "llvm-profdata-$major" \
    "/usr/lib/llvm-$major/bin/llvm-profdata"; do
    if command -v "$c" >/dev/null; then profdata=$c; break; fi
  done
fi
if [ -z "$profdata" ]; then
  echo "no llvm-profdata for LLVM $major: rustup component add llvm-tools," \
    "or apt-get install llvm-$major, or set LLVM_PROFDATA" >&2
  exit 2
fi
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }

# 1. Instrumented. RUSTFLAGS reaches build scripts and proc macros too: their profiles,
# written while building, are cleared before the training.
RUSTFLAGS="-Cprofile-generate=$raw" cargo build --release --locked --bin tracegate \
  --target-dir "$out/gen"
rm -rf "$raw"; mkdir -p "$raw"
gen=$out/gen/release/tracegate

# 2. Training. The sink (benches/otlp_sink.rs) receives the spans over OTLP/gRPC; the echo
# upstream is the plain build, so that only the proxy's profile is kept.
. benches/lib.sh
bench_processes
work=$(mktemp -d)
stop_all() { cleanup; rm -rf "$work"; }
trap stop_all EXIT
"$bin" echo --listen 127.0.0.1:21000 --workers 1 2>/dev/null & pids+=($!)
"$sink" 127.0.0.1:21317 "$work/counts" >/dev/null & pids+=($!)

tls=
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  tls="  - address: 127.0.0.1:21443
    tls: { certificates: [{ cert: $work/cert.pem, key: $work/key.pem }] }"
fi
cat > "$work/on.yaml" <<EOF
listeners:
  - address: 127.0.0.1:21080
$tls
admin: { address: 127.0.0.1:21180 }
upstreams:
  - { name: app, endpoints: [http://127.0.0.1:21000] }
  - { name: grpcish, endpoints: [http://127.0.0.1:21000], protocol: http2 }
routes:
  - { name: "/api/users/{id}", match: { path_regex: "/api/users/[0-9]+", methods: [GET, PUT] }, upstream: app }
  - { match: { path: /login, headers: [{ name: x-tenant }] }, upstream: app }
  - { match: { path_prefix: /static }, upstream: app }
  - { match: { path_prefix: /rpc }, upstream: grpcish }
  - { match: { path: /ping }, upstream: app, sampling: { exclude: true } }
  - { upstream: app }
tracing:
  service_name: pgo-training
  propagation: [tracecontext, baggage, b3]
  baggage_attributes: [tenant]
  capture: { request_headers: [x-tenant], response_headers: [content-type] }
  sampling: { ratio: 1.0 }
export:
  protocol: grpc
  endpoint: http://127.0.0.1:21317
  batch_delay: 200ms
access_log: { format: json, path: $work/access.log }
EOF
sed -e 's/21080/21090/; s/21443/21444/; s/21180/21181/' -e '/^tracing:/,$d' "$work/on.yaml" > "$work/off.yaml"
printf 'export: { protocol: none }\n' >> "$work/off.yaml"
# Tracing on again, HTTP/2 served by hyper's server (`limits.http2_server: hyper`; the
# other runs use tracegate's own, the default).
sed -e 's/21080/21100/; s/21443/21445/; s/21180/21182/' "$work/on.yaml" > "$work/hyper.yaml"
printf 'limits: { http2_server: hyper }\n' >> "$work/hyper.yaml"
cat > "$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("{\"item\":42,\"qty\":1}", 40)
wrk.headers["Content-Type"] = "application/json"
EOF

load() { # base url
  local u=$1
  wrk -t1 -c32 -d4s "$u/api/users/123" >/dev/null
  wrk -t1 -c128 -d3s -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
    -H 'baggage: tenant=acme,region=eu' "$u/static/app.js?v=3" >/dev/null
  wrk -t1 -c16 -d2s -H 'b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1' \
    -H 'x-tenant: acme' -H 'X-Request-ID: req-123' "$u/login" >/dev/null
  wrk -t1 -c16 -d2s -s "$work/post.lua" "$u/rpc/orders.Create" >/dev/null
  wrk -t1 -c8 -d1s "$u/ping" >/dev/null
}
for mode in on off hyper; do
  case $mode in
    on) port=21080 tport=21443;;
    off) port=21090 tport=21444;;
    hyper) port=21100 tport=21445;;
  esac
  "$gen" run --config "$work/$mode.yaml" --workers 1 2>"$work/$mode.log" &
  tg=$!
  up=
  for _ in $(seq 50); do curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/ping" && { up=1; break; }; sleep 0.2; done
  [ -n "$up" ] || { echo "the training tracegate ($mode) did not start: $(cat "$work/$mode.log")" >&2; exit 1; }
  load "http://127.0.0.1:$port"
  if command -v h2load >/dev/null; then
    h2load -n 20000 -c 16 -m 8 "http://127.0.0.1:$port/api/users/7" >/dev/null
  fi
  if [ -n "$tls" ]; then
    wrk -t1 -c16 -d2s "https://127.0.0.1:$tport/static/site.css" >/dev/null
    if command -v h2load >/dev/null; then
      h2load -n 5000 -c 8 -m 8 "https://127.0.0.1:$tport/api/users/9" >/dev/null
    fi
  fi
  kill -TERM "$tg"; wait "$tg" || { echo "training run ($mode) failed: $(cat "$work/$mode.log")" >&2; exit 1; }
done
[ "$(sink_spans "$work/counts")" -gt 0 ] || { echo "the training exported no spans" >&2; exit 1; }
"$profdata" merge -o "$out/tracegate.profdata" "$raw"/*.profraw

# 3. Optimised with the profile.
RUSTFLAGS="-Cprofile-use=$PWD/$out/tracegate.profdata" cargo build --release --locked \
  --bin tracegate --target-dir "$out/use"
cp "$out/use/release/tracegate" "$out/tracegate"
echo "$out/tracegate"
