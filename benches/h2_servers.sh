#!/usr/bin/env bash
# HTTP/2 clients against tracegate's two HTTP/2 servers (`limits.http2_server`): hyper's and
# the native one (src/listen/http2), in one binary, tracing on (SERVER + CLIENT span over
# OTLP/gRPC to the sink), interleaved over rounds: req/s, p99, CPU µs a request, and at the
# end each process's peak RSS; then medians and native/hyper paired by round (geometric
# mean, 95% interval). One worker each on core 0; h2load, the echo upstream and the sink on
# core 1.
#   bash benches/h2_servers.sh [seconds=5] [rounds=4] [connections=32] [streams=1]
# Needs h2load (apt-get install nghttp2-client). TG_BIN=path measures that build (the PGO
# one: target/pgo/tracegate). Everything stays on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}; rounds=${2:-4}; conns=${3:-32}; multiplex=${4:-1}
. benches/lib.sh
bench_processes
work=$(mktemp -d)
runs="$work/runs"
trap 'cleanup; rm -rf "$work"' EXIT
bench_backends "$work/counts"
declare -A port pid
for server in hyper native; do
  case $server in hyper) p=18082 a=19082;; native) p=18092 a=19092;; esac
  sed "s/18082/$p/; s/19082/$a/; s/^export:/limits:\n  http2_server: $server\nexport:/" \
    benches/proxy/tracegate-on.yaml >"$work/$server.yaml"
  "${pin0[@]}" "$bin" run --config "$work/$server.yaml" --workers 1 >"$work/$server.log" 2>&1 &
  pids+=($!); pid[$server]=$!; port[$server]=$p
done
sleep 1
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "$(nproc) cores; $(uname -r); h2load -t1 -c$conns -m$multiplex, ${secs}s a run, $rounds rounds, one worker each; $bin"
for r in $(seq "$rounds"); do
  for server in hyper native; do
    url="http://127.0.0.1:${port[$server]}/api/bench"
    # A warm-up by count: connections set up, pools filled.
    timeout 60 "${pin1[@]}" h2load -t1 -c"$conns" -m"$multiplex" -n $((conns * multiplex * 40)) "$url" >/dev/null 2>&1 || true
    c0=$(cpu "${pid[$server]}")
    out=$(timeout $((secs + 60)) "${pin1[@]}" h2load -t1 -c"$conns" -m"$multiplex" -D "$secs" \
      --log-file="$work/latency" "$url")
    c1=$(cpu "${pid[$server]}")
    reqs=$(awk '/^requests:/ {print $8}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10}' <<<"$out")
    p99=$(sort -n -k3 "$work/latency" | awk '{a[NR]=$3} END {print (NR ? a[int(NR * 0.99)] / 1000 : 0)}')
    row=$(awk -v s="$server" -v r="$r" -v n="$reqs" -v d="$secs" -v c=$((c1 - c0)) -v hz="$hz" \
      -v p="$p99" 'BEGIN { printf "%s %d %.0f %.3f %.2f", s, r, n / d, p, c * 1e6 / hz / (n > 0 ? n : 1) }')
    echo "$row" >>"$runs"
    read -r _ _ rate p99 us <<<"$row"
    printf '%-7s round %d  %9s req/s  p99 %7s ms  %6s us CPU/req  failed %s\n' \
      "$server" "$r" "$rate" "$p99" "$us" "$failed"
  done
done
for server in hyper native; do
  echo "$server: peak RSS $(awk '/VmHWM/ {print $2}' "/proc/${pid[$server]}/status") KiB"
done
python3 - "$runs" <<'PY'
import statistics, sys
sys.path.insert(0, "benches")
from stats import ratio_interval as interval
rows = [l.split() for l in open(sys.argv[1])]
by = {s: {int(r): tuple(map(float, x)) for w, r, *x in rows if w == s} for s in ("hyper", "native")}
for s in ("hyper", "native"):
    x = by[s].values()
    med = lambda i: statistics.median(row[i] for row in x)
    print(f"{s}: median {med(0):,.0f} req/s, p99 {med(1):.2f} ms, {med(2):.1f} us CPU a request")
pairs = [r for r in by["hyper"] if r in by["native"]]
ratio = lambda i: interval([by["native"][r][i] / by["hyper"][r][i] for r in pairs])
print(f"native/hyper, paired by round: req/s {ratio(0)}, p99 {ratio(1)}, CPU a request {ratio(2)}")
PY
