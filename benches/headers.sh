#!/usr/bin/env bash
# What the headers a proxy adds cost the upstream: wrk straight to the echo upstream
# (`tracegate echo --fixed`, both on core 1, the core that limits the rate in
# benches/proxy/run.sh), in rounds without and with (in turn first) the five request headers
# tracegate adds with tracing on (X-Forwarded-For, -Proto, -Host, traceparent, X-Request-ID).
# Prints each round's req/s and the extra µs a request (1/rate with them - 1/rate without),
# then its median and mean with a 95% confidence interval.
#   bash benches/headers.sh [seconds=5] [rounds=8] [connections=32]
# Needs wrk. Everything stays on 127.0.0.1:38000 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}; rounds=${2:-8}; conns=${3:-32}
. benches/lib.sh
bench_processes
"${pin1[@]}" "$bin" echo --listen 127.0.0.1:38000 --workers 1 ${echo_mode[@]+"${echo_mode[@]}"} 2>/dev/null & pids+=($!)
sleep 0.5
added=(-H "x-forwarded-for: 127.0.0.1" -H "x-forwarded-proto: http"
  -H "x-forwarded-host: 127.0.0.1:18082"
  -H "traceparent: 00-45411c8784ee154299f8d907860e9694-6eab87892b24b896-03"
  -H "x-request-id: 7e9c7ff7-dba4-4db7-979f-adfba1cc475f")
runs=$(mktemp); trap 'cleanup; rm -f "$runs"' EXIT
for r in $(seq "$rounds"); do
  order="without with"; [ $((r % 2)) -eq 0 ] && order="with without"   # neither always first
  for v in $order; do
    h=(); [ "$v" = with ] && h=("${added[@]}")
    rate=$(timeout $((secs + 20)) "${pin1[@]}" wrk -t1 -c"$conns" -d"${secs}s" ${h[@]+"${h[@]}"} \
      http://127.0.0.1:38000/api/bench | awk '/Requests\/sec/ {print $2}')
    echo "round $r $v headers: $rate req/s"
    echo "$r $v $rate" >> "$runs"
  done
done
python3 - "$runs" <<'PY'
import statistics, sys
sys.path.insert(0, "benches")
from stats import mean_interval
by = {}
for r, v, rate in (l.split() for l in open(sys.argv[1])):
    by.setdefault(r, {})[v] = float(rate)
extra = [1e6 / d["with"] - 1e6 / d["without"] for d in by.values() if len(d) == 2]
print("extra us a request, by round:", " ".join(f"{x:.2f}" for x in extra))
print(f"median {statistics.median(extra):.2f} us, mean with its 95% interval {mean_interval(extra)}")
PY
