#!/usr/bin/env bash
# Soak: a bounded run (default 600 s) at about 80% of the measured maximum throughput, mixed
# routes with errors and slow requests, every span exported to a real OTLP/gRPC receiver
# (benches/otlp_sink.rs). Samples RSS, open fds, threads and alive tasks every 10 s.
# Passes when RSS and fds are flat after warm-up (first minute) and no span is lost.
#   bash tests/soak/run.sh [seconds] [connections]
# LOAD=h2: HTTP/2 clients (h2load -t1 -m1 over h2c, paced with --rps) instead of wrk's
# HTTP/1.1, the same mix. H2_SERVER=hyper|native sets limits.http2_server. WORKERS=n runs
# tracegate with n workers (default 1; results in results-latest[-h2]-Nworkers.txt).
# Needs wrk (apt-get install wrk), or h2load (nghttp2-client) for LOAD=h2, and curl.
# 127.0.0.1 only; everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-600}
conns=${2:-32}
load=${LOAD:-h1}
out=tests/soak/results-latest.txt
[ "$load" = h2 ] && out=tests/soak/results-latest-h2.txt
workers=${WORKERS:-1}
[ "$workers" != 1 ] && out=${out%.txt}-${workers}workers.txt
. benches/lib.sh
counts=$(mktemp)
config=tests/soak/tracegate.yaml
if [ -n "${H2_SERVER:-}" ]; then
  config=$(mktemp --suffix .yaml)
  cat tests/soak/tracegate.yaml > "$config"
  printf 'limits:\n  http2_server: %s\n' "$H2_SERVER" >> "$config"
fi
# The mix for h2load: the same paths as mix.lua, in its proportions, used in turn.
urls=$(mktemp)
base=http://127.0.0.1:19080
{
  for i in $(seq 90); do echo "$base/api/orders/$((i % 7))"; done
  for _ in $(seq 5); do echo "$base/api/orders/9?status=500"; done
  for _ in $(seq 5); do echo "$base/reports/daily?delay_ms=50"; done
} > "$urls"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$bin" echo --listen 127.0.0.1:19000 --workers 1 2>/dev/null & pids+=($!)
"$sink" 127.0.0.1:14327 "$counts" >/dev/null & pids+=($!)
"$bin" run --config "$config" --workers "$workers" 2>/dev/null & tg=$!; pids+=($tg)
for _ in $(seq 50); do curl -sf -m 1 127.0.0.1:19081/readyz >/dev/null && break; sleep 0.1; done

metric() { curl -s -m 5 127.0.0.1:19081/metrics | awk -v m="$1" '$1==m {print $2}'; }
sample() { # elapsed
  local rss fds thr
  rss=$(awk '/VmRSS/ {print $2}' /proc/$tg/status)
  fds=$(ls /proc/$tg/fd | wc -l)
  thr=$(awk '/Threads/ {print $2}' /proc/$tg/status)
  printf '%6s s  rss %6s KiB  fds %4s  threads %2s  tasks %5s  conns %4s  queue %5s\n' \
    "$1" "$rss" "$fds" "$thr" "$(metric tracegate_runtime_alive_tasks)" \
    "$(metric tracegate_active_connections)" "$(metric tracegate_export_queue_depth)"
}

{
if [ "$load" = h2 ]; then
  client="h2load -t1 -c$conns -m1 (h2c), limits.http2_server: ${H2_SERVER:-default}"
else
  client="wrk -t1 -c$conns"
fi
echo "soak: $(date -u +%FT%TZ), $(nproc) cores, $secs s, $client, tracegate $workers worker(s)"
if [ "$load" = h2 ]; then
  max=$(timeout 60 h2load -t1 -c"$conns" -m1 -D 10 -i "$urls" | awk '/^finished in/ {print $4}')
  # Each client's rate, for ~80% of the maximum in all.
  rps=$(python3 -c "print(max(1, round($max * 0.8 / $conns)))")
  echo "max ${max} req/s with this mix; each connection at ${rps} req/s for ~80%"
  timeout $((secs + 30)) h2load -t1 -c"$conns" -m1 --rps="$rps" -D "$secs" -i "$urls" \
    > /tmp/soak-load.txt &
else
  max=$(wrk -t1 -c"$conns" -d10s -s tests/soak/mix.lua http://127.0.0.1:19080 | awk '/Requests\/sec/ {print $2}')
  # Per-connection pause that brings the rate to ~80%: each request takes conns/max s at
  # full speed; a quarter of that again as a pause.
  delay=$(python3 -c "print(max(0, round($conns * 1000 / $max * 0.25)))")
  echo "max ${max} req/s with this mix; pacing each connection with ${delay} ms for ~80%"
  DELAY_MS=$delay timeout $((secs + 30)) wrk -t1 -c"$conns" -d"${secs}s" -s tests/soak/mix.lua \
    http://127.0.0.1:19080 > /tmp/soak-load.txt &
fi
loading=$!
samples=()
start=$(date +%s)
while kill -0 "$loading" 2>/dev/null; do
  line=$(sample $(( $(date +%s) - start )))
  echo "$line"
  samples+=("$line")
  sleep 10
done
wait "$loading" || true
failed=0
if [ "$load" = h2 ]; then
  grep -E "^finished in|^requests:|^status codes:" /tmp/soak-load.txt
  rate=$(awk '/^finished in/ {print $4}' /tmp/soak-load.txt)
  # Requests that got no answer (errored, timed out); the 500s are the mix's.
  failed=$(awk '/^requests:/ {print $12 + $14}' /tmp/soak-load.txt)
else
  grep -E "Requests/sec|requests in|Non-2xx|Socket errors" /tmp/soak-load.txt
  rate=$(awk '/Requests\/sec/ {print $2}' /tmp/soak-load.txt)
fi
echo "load: $rate req/s = $(python3 -c "print(round(100 * $rate / $max))")% of the measured maximum"
sleep 3   # the last batch, and the sink's once-a-second count
sample "end"
produced=$(metric tracegate_spans_produced_total)
exported=$(metric tracegate_spans_exported_total)
dropped=$(curl -s -m 5 127.0.0.1:19081/metrics | awk '/^tracegate_spans_dropped_total/ {s+=$2} END {print s+0}')
read -r received _ < "$counts"
echo "spans: produced $produced, exported $exported, dropped $dropped, received by the sink $received"
# Flat: the last sample within 10% (+2 MiB) of the first after warm-up; fds within 5.
flat=0
python3 - "${samples[@]}" <<'PY' || flat=1
import sys
rows = [l.split() for l in sys.argv[1:]]
rows = [r for r in rows if r[0].isdigit()]
warm = [r for r in rows if int(r[0]) >= 60] or rows
first, last = warm[0], rows[-1]
rss0, rss1 = int(first[3]), int(last[3])
fd0, fd1 = int(first[6]), int(last[6])
ok = rss1 <= rss0 * 1.10 + 2048 and fd1 <= fd0 + 5
print("rss after warm-up %d KiB, at the end %d KiB; fds %d -> %d: %s" % (rss0, rss1, fd0, fd1, "flat" if ok else "GROWING"))
sys.exit(0 if ok else 1)
PY
if [ "$dropped" = "0" ] && [ "$received" = "$produced" ] && [ "$flat" = 0 ] && [ "$failed" = 0 ]; then
  echo "PASS: flat memory and fds, no span lost"
else
  echo "FAIL"
  exit 1
fi
} 2>&1 | tee "$out"
