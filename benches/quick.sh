#!/usr/bin/env bash
# Quick load check: the direct path vs tracegate (one worker thread each), in one run.
#   bash benches/quick.sh [seconds] [connections]
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1 and stops by itself.
# tracegate runs three ways: export off (context still propagated, no spans recorded),
# spans recorded and exported to a collector port that refuses (built, batched, dropped and
# counted), and spans exported to a live OTLP/gRPC receiver when OTLP_SINK=host:port is given.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
cargo build --release -q
bin=target/release/tracegate
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Pin each process to its own core where taskset exists (util-linux).
pin0=(); pin1=()
if command -v taskset >/dev/null; then pin0=(taskset -c 0); pin1=(taskset -c 1); fi

"${pin1[@]}" "$bin" echo --listen 127.0.0.1:18000 --workers 1 2>/dev/null & pids+=($!)
sleep 0.5

run_tg() { # name port admin extra-env...
  local port=$2 admin=$3; shift 3
  env "$@" OTEL_BSP_SCHEDULE_DELAY=200 "${pin0[@]}" "$bin" run --listen 127.0.0.1:$port \
    --upstream http://127.0.0.1:18000 --admin 127.0.0.1:$admin --workers 1 2>/dev/null &
  pids+=($!)
  sleep 0.5
}
run_tg off 18081 19081 OTEL_SDK_DISABLED=true
run_tg dropped 18082 19082 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1
if [ -n "${OTLP_SINK:-}" ]; then
  run_tg exported 18083 19083 OTEL_EXPORTER_OTLP_ENDPOINT=http://$OTLP_SINK
fi

measure() { # label url
  local out
  out=$(timeout $((secs + 20)) wrk -t1 -c"$conns" -d"${secs}s" --latency "$2")
  printf '%-34s %10s req/s   p50 %8s   p99 %8s\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")"
}
echo "wrk -t1 -c$conns -d${secs}s; echo upstream and tracegate one worker each"
measure "direct (echo upstream)" http://127.0.0.1:18000/
measure "tracegate, export off" http://127.0.0.1:18081/
measure "tracegate, spans built+dropped" http://127.0.0.1:18082/
curl -s -m 5 127.0.0.1:19082/metrics | grep -E '^tracegate_spans_(produced|dropped)' || true
if [ -n "${OTLP_SINK:-}" ]; then
  measure "tracegate, exported to $OTLP_SINK" http://127.0.0.1:18083/
  curl -s -m 5 127.0.0.1:19083/metrics | grep -E '^tracegate_spans_(produced|exported|dropped)' || true
fi
