#!/usr/bin/env bash
# Clients that close after each request (wrk -H "Connection: close"): two tracegate builds
# in alternating rounds, tracing on (sidecar mode, OTLP/gRPC to benches/otlp_sink.rs), each
# with WORKERS workers (default 2) pinned to core 0; the echo upstream, the sink and wrk on
# core 1. Prints req/s and p99 a round. Every connection is accepted, handed to a worker
# and closed: what the hand-off to a worker costs (src/workers.rs).
#   bash benches/close.sh OLD_BINARY NEW_BINARY [seconds=5] [rounds=4] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1; new=$2; secs=${3:-5}; rounds=${4:-4}; conns=${5:-32}
. benches/lib.sh
bench_processes
counts=$(mktemp)
trap 'cleanup; rm -f "$counts"' EXIT
"${pin1[@]}" "$bin" echo --listen 127.0.0.1:48000 --workers 1 --fixed 2>/dev/null & pids+=($!)
"${pin1[@]}" "$sink" 127.0.0.1:44317 "$counts" >/dev/null & pids+=($!)
sleep 0.5
for r in $(seq "$rounds"); do
  for v in old new; do
    b=$old; [ "$v" = new ] && b=$new
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:44317 "${pin0[@]}" "$b" run \
      --listen 127.0.0.1:48083 --upstream http://127.0.0.1:48000 --admin off \
      --workers "${WORKERS:-2}" 2>/dev/null &
    p=$!
    sleep 0.5
    out=$("${pin1[@]}" wrk -t1 -c"$conns" -d"${secs}s" --latency -H "Connection: close" \
      http://127.0.0.1:48083/ 2>&1)
    echo "$v round $r  $(awk '/Requests\/sec/ {print $2}' <<<"$out") req/s  p99 $(awk '$1=="99%" {print $2}' <<<"$out")  $(grep -E 'Socket errors|Non-2xx' <<<"$out" | xargs)"
    kill "$p"; wait "$p" 2>/dev/null || true
  done
done
