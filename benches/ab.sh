#!/usr/bin/env bash
# A/B of two tracegate builds, tracing on (SERVER + CLIENT span over OTLP/gRPC to the sink),
# in alternating rounds on 127.0.0.1: req/s, p99, CPU µs per request (user and kernel),
# spans exported per request, drops and peak RSS of a fresh process per run; then medians,
# in how many rounds the new build served more and spent less user time, and new over old
# paired by round (req/s, p99) as a geometric mean with its 95% confidence interval. Also,
# from /proc/*/schedstat (nanoseconds): the export thread's share of the process's CPU, and
# the OTLP sink's CPU against the echo upstream's (both on core 1), as ratios paired by
# round; shares move less with the VM's speed from round to round than times do.
#   bash benches/ab.sh OLD_BINARY NEW_BINARY [seconds=6] [rounds=3] [connections=32]
# E.g. keep a copy of target/release/tracegate before a change, rebuild, then compare.
# Needs wrk (LOAD=h2: h2load, HTTP/2 clients; benches/lib.sh). Each tracegate runs one worker
# (WORKERS=n: n) pinned to core 0; upstream, sink and the load generator core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1; new=$2; secs=${3:-6}; rounds=${4:-3}; conns=${5:-32}
. benches/lib.sh
bench_processes
counts=$(mktemp)
# Fresh copies of both, read once: 7-8 MiB of a tracegate's RSS is its binary's pages, and
# how many the kernel maps depends on how much of the file is in the page cache (an old
# copy of the same binary starts ~0.7 MiB lower than a fresh one).
copies=$(mktemp -d)
trap 'cleanup; rm -rf "$copies" "$counts"' EXIT
cp "$old" "$copies/old"; cp "$new" "$copies/new"
cat "$copies/old" "$copies/new" >/dev/null
old=$copies/old; new=$copies/new
"${pin1[@]}" "$bin" echo --listen 127.0.0.1:38000 --workers 1 ${echo_mode[@]+"${echo_mode[@]}"} 2>/dev/null & pids+=($!)
"${pin1[@]}" "$sink" 127.0.0.1:34317 "$counts" >/dev/null & pids+=($!)
sleep 0.5
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }   # utime stime, clock ticks
echo_pid=${pids[0]}; sink_pid=${pids[1]}
# CPU nanoseconds so far: the process $1's, its export thread's, the sink's, the upstream's.
ns() {
  local all=0 exp=0 t v
  for t in /proc/"$1"/task/*; do
    v=$(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0); all=$((all + v))
    [ "$(cat "$t/comm" 2>/dev/null)" = tracegate-expor ] && exp=$((exp + v))
  done
  echo "$all $exp $(awk '{print $1}' "/proc/$sink_pid/schedstat") $(awk '{print $1}' "/proc/$echo_pid/schedstat")"
}
per() { echo $(( ($1) / (reqs > 0 ? reqs : 1) )); }   # an expression of counts, per request
us() { python3 -c "print(f'{$1 * 1e6 / $(getconf CLK_TCK) / max($2, 1):.1f}')"; }
runs=$(mktemp); trap 'cleanup; rm -rf "$copies" "$counts" "$runs"' EXIT
metric() { curl -s -m 5 127.0.0.1:39083/metrics | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
for r in $(seq "$rounds"); do
  for v in old new; do
    b=$old; [ "$v" = new ] && b=$new
    OTEL_BSP_SCHEDULE_DELAY=200 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:34317 \
      "${pin0[@]}" "$b" run --listen 127.0.0.1:38083 --upstream http://127.0.0.1:38000 \
      --admin 127.0.0.1:39083 --workers "${WORKERS:-1}" 2>/dev/null &
    t=$!
    sleep 0.5
    read -r u0 s0 < <(cpu $t)
    read -r all0 exp0 sink0 echo0 < <(ns $t)
    m=$(load_run http://127.0.0.1:38083/ "$conns" "$secs"); read -r reqs rate _ p99 <<<"$m"
    read -r u1 s1 < <(cpu $t)
    read -r all1 exp1 sink1 echo1 < <(ns $t)
    sleep 0.5
    exported=$(metric tracegate_spans_exported_total); dropped=$(metric tracegate_spans_dropped_total)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$t/status")
    kill $t; wait $t 2>/dev/null || true
    user=$(us $((u1 - u0)) "$reqs"); kernel=$(us $((s1 - s0)) "$reqs")
    exp_ns=$(per "exp1 - exp0"); sink_ns=$(per "sink1 - sink0"); echo_ns=$(per "echo1 - echo0")
    exp_share=$(python3 -c "print(round(100 * ($exp1 - $exp0) / max($all1 - $all0, 1), 2))")
    printf '%s round %s  %9s req/s  p99 %8s  %5.1f us CPU/req (user %4s, kernel %4s)  spans/req %s  dropped %s  peak RSS %s KiB  export thread %s ns/req (%s%%)  sink %s, upstream %s ns/req\n' \
      "$v" "$r" "$rate" "${p99}ms" \
      "$(python3 -c "print($user + $kernel)")" "$user" "$kernel" \
      "$(python3 -c "print(round($exported / max($reqs, 1), 2))")" "$dropped" "$hwm" \
      "$exp_ns" "$exp_share" "$sink_ns" "$echo_ns"
    echo "$v $r $rate $user $kernel $p99 $exp_share $sink_ns $echo_ns" >> "$runs"
  done
done
# Medians over the rounds, and in how many rounds the new build served more.
python3 - "$runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {v: {int(r): tuple(map(float, x)) for w, r, *x in rows if w == v} for v in ("old", "new")}
sys.path.insert(0, "benches")
from stats import ratio_interval as interval
for v in ("old", "new"):
    x = by[v].values()
    med = lambda i: statistics.median(row[i] for row in x)
    print(f"{v}: median {med(0):,.0f} req/s, user {med(1):.2f} us, kernel {med(2):.2f} us a request, p99 {med(3):.3f} ms,"
          f" export thread {med(4):.2f}% of the CPU, sink {med(5) / med(6):.3f} of the upstream's CPU")
pairs = [r for r in by["old"] if r in by["new"]]
print(f"new ahead in {sum(by['new'][r][0] > by['old'][r][0] for r in pairs)} of {len(pairs)} rounds (req/s),"
      f" {sum(by['new'][r][1] < by['old'][r][1] for r in pairs)} of {len(pairs)} (less user time)")
print(f"new/old, paired by round, geometric mean [95% interval]: req/s {interval([by['new'][r][0] / by['old'][r][0] for r in pairs])},"
      f" p99 {interval([by['new'][r][3] / by['old'][r][3] for r in pairs])}")
# Both sides of the export: the export thread's share of the process's CPU, and the sink's
# CPU for the same requests (against the upstream's, which the spans do not change).
print(f"new/old, paired: export thread's share {interval([by['new'][r][4] / by['old'][r][4] for r in pairs])},"
      f" sink per upstream CPU {interval([(by['new'][r][5] / by['new'][r][6]) / (by['old'][r][5] / by['old'][r][6]) for r in pairs])}")
PY
