#!/usr/bin/env bash
# Requests while the collector is broken: tracegate (tracing on, one worker pinned to core 0)
# with its collector up (benches/otlp_sink.rs), black-holed (a socket that accepts and never
# reads) and refusing, interleaved over rounds, c=32. Prints req/s, peak RSS and the span
# counters per run. Everything on 127.0.0.1; each run is bounded by wrk's duration.
#   bash benches/collector_faults.sh [seconds=8] [rounds=3]
# Needs wrk, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}; rounds=${2:-3}
. benches/lib.sh
bench_processes
counts=$(mktemp)
"${pin1[@]}" "$bin" echo --listen 127.0.0.1:28000 --workers 1 ${echo_mode[@]+"${echo_mode[@]}"} 2>/dev/null & pids+=($!)
"${pin1[@]}" "$sink" 127.0.0.1:24317 "$counts" >/dev/null & pids+=($!)
"${pin1[@]}" python3 -c '
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 24999))
s.listen(1024)
held = []
while True:
    c, _ = s.accept()
    held.append(c)   # never read, never answered
' & pids+=($!)
sleep 0.7
run() { # label endpoint
  OTEL_BSP_SCHEDULE_DELAY=200 OTEL_EXPORTER_OTLP_TIMEOUT=1000 OTEL_EXPORTER_OTLP_ENDPOINT=$2 \
    "${pin0[@]}" "$bin" run --listen 127.0.0.1:28083 --upstream http://127.0.0.1:28000 \
    --admin 127.0.0.1:29083 --workers 1 2>/dev/null &
  local t=$!
  sleep 0.5
  local out rss spans
  out=$(timeout $((secs + 20)) wrk -t1 -c32 -d"${secs}s" http://127.0.0.1:28083/)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$t/status")
  spans=$(curl -s -m 5 127.0.0.1:29083/metrics \
    | grep -E '^tracegate_spans_(exported|dropped)_total' \
    | awk '{v[$1]+=$2} END {for (k in v) if (v[k] > 0) printf "%s=%d ", k, v[k]}')
  printf '%-12s %10s req/s  peak RSS %6s KiB  %s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$rss" "$spans"
  kill "$t"; wait "$t" 2>/dev/null || true
}
for r in $(seq "$rounds"); do
  run up http://127.0.0.1:24317
  run black-holed http://127.0.0.1:24999
  run refused http://127.0.0.1:1
done
