#!/usr/bin/env bash
# Quick load check: the direct path vs tracegate (one worker thread each), in one run.
#   bash benches/quick.sh [seconds] [connections]
# Needs wrk (apt-get install wrk). Everything stays on 127.0.0.1 and stops by itself.
# tracegate runs three ways: export off (context still propagated, no spans recorded),
# spans exported to a live OTLP/gRPC receiver (benches/otlp_sink.rs, decodes and counts), and
# spans recorded for a collector port that refuses (built, batched, dropped and counted).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
. benches/lib.sh
counts=$(mktemp)
bench_processes   # pids stopped on exit; pin0/pin1 pin to core 0/1 where taskset exists

bench_backends "$counts"
sleep 0.5

run_tg() { # name port admin extra-env...
  local port=$2 admin=$3; shift 3
  env "$@" OTEL_BSP_SCHEDULE_DELAY=200 "${pin0[@]}" "$bin" run --listen 127.0.0.1:$port \
    --upstream http://127.0.0.1:18000 --admin 127.0.0.1:$admin --workers 1 2>/dev/null &
  pids+=($!)
  sleep 0.5
}
run_tg off 18081 19081 OTEL_SDK_DISABLED=true
run_tg exported 18083 19083 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317
run_tg dropped 18082 19082 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }   # utime+stime, clock ticks
measure() { # label url pid
  local out before after reqs
  before=$(cpu "$3")
  out=$(timeout $((secs + 20)) wrk -t1 -c"$conns" -d"${secs}s" --latency "$2")
  after=$(cpu "$3")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  printf '%-34s %10s req/s   p50 %8s   p99 %8s   %4s us CPU/req\n' "$1" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" \
    "$(( (after - before) * 1000000 / $(getconf CLK_TCK) / reqs ))"
  last_reqs=$reqs
}
pid_on() { pgrep -f -- "--listen 127.0.0.1:$1 " | head -n1; }
echo "wrk -t1 -c$conns -d${secs}s; echo upstream and tracegate one worker each"
echo "(CPU/req: the process serving the URL; for direct, the echo upstream)"
measure "direct (echo upstream)" http://127.0.0.1:18000/ "$(pid_on 18000)"
measure "tracegate, export off" http://127.0.0.1:18081/ "$(pid_on 18081)"
measure "tracegate, 2 spans/req exported" http://127.0.0.1:18083/ "$(pid_on 18083)"
sleep 2   # the last batch and the sink's once-a-second count
spans=$(sink_spans "$counts")
echo "  spans received by the OTLP sink per request: $(python3 -c "print(round($spans/$last_reqs, 2))")"
curl -s -m 5 127.0.0.1:19083/metrics | grep -E '^tracegate_spans_(exported|dropped)' | sed 's/^/  /' || true
measure "tracegate, 2 spans/req, dead collector" http://127.0.0.1:18082/ "$(pid_on 18082)"
curl -s -m 5 127.0.0.1:19082/metrics | grep -E '^tracegate_spans_dropped' | sed 's/^/  /' || true
