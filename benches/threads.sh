#!/usr/bin/env bash
# Where tracing's CPU goes: tracegate with tracing on and off (benches/proxy/*.yaml), one
# worker on core 0, wrk on core 1 with the echo upstream and the OTLP sink; prints CPU µs per
# request for each of tracegate's threads (the worker, the export thread) from
# /proc/PID/task/*/stat, user and kernel apart, with how often each was preempted
# (involuntary context switches a request), and for the load side on core 1 (the echo
# upstream, the OTLP sink decoding the spans), which can be what limits the request rate.
#   bash benches/threads.sh [seconds] [rounds] [connections]   (WORKERS=n: n workers)
# Needs wrk. Everything stays on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-6}
rounds=${2:-2}
conns=${3:-32}
. benches/lib.sh
bench_processes
counts=$(mktemp)
bench_backends "$counts"
echo_pid=${pids[0]}; sink_pid=${pids[1]}
declare -A pid port
for cfg in tracegate-on tracegate-off; do
  "${pin0[@]}" "$bin" run --config "benches/proxy/$cfg.yaml" --workers "${WORKERS:-1}" 2>/dev/null &
  pid[$cfg]=$!; pids+=($!)
  port[$cfg]=$(grep -o '127.0.0.1:180[0-9]*' "benches/proxy/$cfg.yaml" | head -1)
done
sleep 1

ticks() { awk '{print $14+$15}' "$1/stat"; }   # utime+stime, clock ticks (100 Hz)
# utime, stime and involuntary context switches of a thread.
thread_times() { echo "$(awk '{print $14, $15}' "$1/stat") $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$1/status")"; }
for round in $(seq "$rounds"); do
  for cfg in tracegate-on tracegate-off; do
    p=${pid[$cfg]}
    wrk -t1 -c"$conns" -d1s "http://${port[$cfg]}/" >/dev/null   # warm the pools
    declare -A before=()
    for t in /proc/"$p"/task/*; do before[$t]=$(thread_times "$t"); done
    echo0=$(ticks /proc/"$echo_pid"); sink0=$(ticks /proc/"$sink_pid")
    out=$("${pin1[@]}" wrk -t1 -c"$conns" -d"${secs}s" "http://${port[$cfg]}/")
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rate=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    line="round $round c=$conns $cfg: $rate req/s;"
    for t in /proc/"$p"/task/*; do
      read -r u0 s0 c0 <<<"${before[$t]:-0 0 0}"
      read -r u1 s1 c1 <<<"$(thread_times "$t")"
      [ $(( u1 + s1 - u0 - s0 )) -gt 0 ] && line+=" $(cat "$t/comm") $(awk -v u=$((u1 - u0)) \
        -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v r="$reqs" \
        'BEGIN {printf "%.1f us/req (user %.2f, kernel %.2f, preempted %.3f/req)", (u + s) * 10000 / r, u * 10000 / r, s * 10000 / r, c / r}')"
    done
    per() { awk -v u="$1" -v r="$reqs" 'BEGIN {printf "%.1f", u * 10000 / r}'; }
    line+="; core 1: echo $(per $(( $(ticks /proc/"$echo_pid") - echo0 ))) us/req,"
    line+=" sink $(per $(( $(ticks /proc/"$sink_pid") - sink0 ))) us/req"
    echo "$line"
  done
done
