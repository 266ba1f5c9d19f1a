#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind (callgrind), for one or more tracegate
# builds: a measure the VM's noise does not move, for A/B of user-space changes. Each
# binary runs tracing on (SERVER + CLIENT span over OTLP/gRPC to the sink) under callgrind
# twice, idle and under wrk, for the same time; instructions per request is the difference
# over the requests served. Counts the whole process (worker, export thread), user space
# only: the kernel's share (benches/cpu_split.sh) is not in it.
#   bash benches/instructions.sh BINARY... [-- seconds=8 connections=8 head=short]
# head: `short` (wrk's own: a Host header) or `browser` (~0.8 KB of a browser's headers:
# user agent, accepts, a referer and cookies).
# E.g. keep a copy of target/release/tracegate before a change, rebuild, then
#   bash benches/instructions.sh /tmp/tracegate-before target/release/tracegate
# `nginx` as a binary measures nginx (benches/proxy/nginx.conf, one process) the same way.
# TRACING=off runs the builds with tracing off (OTEL_SDK_DISABLED=true) instead; WORKERS=n
# runs each tracegate with n workers (callgrind runs their threads one at a time).
# UPSTREAM_PROTOCOL=http2 sends upstream over HTTP/2 (h2c, one multiplexed connection)
# instead of HTTP/1.1 (the client side stays HTTP/1.1: wrk). LOAD=h2 makes the client side
# HTTP/2 (h2load, h2c; STREAMS a connection, default 1; benches/lib.sh).
# PROFILE=DIR keeps each loaded run's callgrind file in DIR (callgrind.N.out, N the
# binary's position) for `callgrind_annotate --inclusive=yes`.
# CACHE=1 also simulates the caches (callgrind --cache-sim=yes: 32 KiB L1i and L1d, and a
# 1 MiB L2 as the last level, one core of the EPYC these benchmarks ran on) and prints the
# misses of each per request: where instructions are close but time is not, as at many
# connections.
# Needs valgrind and wrk (apt-get install valgrind wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
secs=${1:-8}; conns=${2:-8}; head=${3:-short}
extra=()
if [ "$head" = browser ]; then
  extra=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
    -H "Accept-Language: en-GB,en;q=0.9,de;q=0.8" -H "Accept-Encoding: gzip, deflate, br, zstd"
    -H "Referer: https://shop.example.com/catalog/shoes?size=42&colour=black&sort=price"
    -H "Cookie: session=8f3a9c2e7b4d1f6a0e5c8b3d9a2f7e1c; cart=3f8e2a9d; _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; prefs=%7B%22theme%22%3A%22dark%22%2C%22lang%22%3A%22en%22%7D; csrftoken=Yx7Qm2Lp9Rt4Vw8Zk3Nb6Hc1Jd5Fg0Sa"
    -H "Sec-Fetch-Dest: document" -H "Sec-Fetch-Mode: navigate" -H "Upgrade-Insecure-Requests: 1")
elif [ "$head" != short ]; then
  echo "head: short or browser" >&2; exit 2
fi
[ ${#bins[@]} -gt 0 ] || { echo "usage: $0 BINARY... [-- seconds connections head]" >&2; exit 2; }
for tool in valgrind $([ "${LOAD:-h1}" = h2 ] && echo h2load || echo wrk); do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind wrk)" >&2; exit 2; }
done
. benches/lib.sh
bench_processes
work=$(mktemp -d)
"${pin1[@]}" "$bin" echo --listen 127.0.0.1:48000 --workers 1 ${echo_mode[@]+"${echo_mode[@]}"} 2>/dev/null & pids+=($!)
"${pin1[@]}" "$sink" 127.0.0.1:44317 "$work/counts" >/dev/null & pids+=($!)
sleep 0.5
# A port in the ephemeral range can be held by an earlier run's connection (even one that
# connected to itself): without the echo upstream every count below would be of 502s.
curl -s -o /dev/null -m 2 http://127.0.0.1:48000/ \
  || { echo "the echo upstream did not start on 127.0.0.1:48000 (port taken?)" >&2; exit 1; }

# nginx as the reference (`nginx` in place of a binary): one process, no tracing.
sed -e 's/^worker_processes 1;/master_process off;\nworker_processes 1;/' \
  -e 's/127.0.0.1:18000/127.0.0.1:48000/; s/127.0.0.1:18086/127.0.0.1:48083/' \
  benches/proxy/nginx.conf > "$work/nginx.conf"

# The zero-config run with another upstream protocol (UPSTREAM_PROTOCOL).
cat > "$work/upstream.yaml" <<EOF
listeners: [{ address: 127.0.0.1:48083 }]
admin: { address: 127.0.0.1:49083 }
upstreams: [{ name: echo, endpoints: [http://127.0.0.1:48000], protocol: ${UPSTREAM_PROTOCOL:-http1} }]
routes: [{ upstream: echo }]
EOF

# glibc copies and clears large blocks with `rep movsb`/`rep stosb`, which callgrind counts
# as one instruction per byte: copying a 95 KB export batch counted as 95,000 (~870 per
# request) though the CPU does it in a few thousand cycles. These thresholds keep glibc on
# its vector loops, whose instructions are counted as they run. RAW_COPIES=1 keeps glibc's
# own choice, as the counts before the sixteenth session were made.
tunables=glibc.cpu.x86_rep_movsb_threshold=1000000000:glibc.cpu.x86_rep_stosb_threshold=1000000000
[ -n "${RAW_COPIES:-}" ] && tunables=

# Total instructions of one run of $1 under callgrind; with load when $2 is "load".
# Prints "instructions requests".
run() {
  local out=$work/cg.$$.$RANDOM reqs=0 cmd stop=-INT
  if [ "$1" = nginx ]; then
    cmd=(nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;'); stop=-QUIT
  elif [ "${UPSTREAM_PROTOCOL:-http1}" = http1 ]; then
    cmd=("$1" run --listen 127.0.0.1:48083 --upstream http://127.0.0.1:48000
      --admin 127.0.0.1:49083 --workers "${WORKERS:-1}")
  else
    cmd=("$1" run --config "$work/upstream.yaml" --workers "${WORKERS:-1}")
  fi
  OTEL_SDK_DISABLED=$([ "${TRACING:-on}" = off ] && echo true || echo false) \
    OTEL_BSP_SCHEDULE_DELAY=200 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:44317 \
    GLIBC_TUNABLES=$tunables valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
    $([ -n "${CACHE:-}" ] && echo --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 \
      --LL=1048576,8,64) \
    "${cmd[@]}" >/dev/null 2>&1 &
  local t=$!
  local i
  for i in $(seq 100); do curl -s -o /dev/null -m 1 http://127.0.0.1:48083/ && break; sleep 0.2; done
  if [ "$2" = load ]; then
    local m
    m=$(load_headers=("${extra[@]}"); load_run http://127.0.0.1:48083/ "$conns" "$secs")
    read -r reqs _ <<<"$m"
  else
    sleep "$secs"
  fi
  kill $stop $t; wait $t 2>/dev/null || true
  # Ir, and with the cache simulation the first-level instruction and data misses (reads
  # and writes) and the last-level misses, found by the names of the `events:` line.
  echo "$(awk 'function ev(name) { return name in col ? $(col[name]) : 0 }
    /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
    /^summary:|^totals:/ { printf "%s %d %d %d", $2, ev("I1mr"), ev("D1mr") + ev("D1mw"),
      ev("ILmr") + ev("DLmr") + ev("DLmw"); exit }' "$out") $reqs"
  if [ -n "${PROFILE:-}" ] && [ "$2" = load ]; then
    mkdir -p "$PROFILE" && mv "$out" "$PROFILE/callgrind.$3.out"
  fi
  rm -f "$out"
}
if [ -n "${CACHE:-}" ]; then
  printf '%-40s %12s %14s %14s %12s %12s %12s\n' binary requests "instr/request" "idle instr" \
    "I1miss/req" "D1miss/req" "L2miss/req"
else
  printf '%-40s %12s %14s %14s\n' binary requests "instr/request" "idle instr"
fi
n=0
for b in "${bins[@]}"; do
  n=$((n + 1))
  read -r idle idle_i1 idle_d1 idle_ll _ < <(run "$b" idle)
  read -r busy i1 d1 ll reqs < <(run "$b" load "$n")
  awk -v b="$b" -v i="$idle" -v l="$busy" -v n="$reqs" -v c="${CACHE:-}" -v i1="$i1" \
    -v ii1="$idle_i1" -v d1="$d1" -v id1="$idle_d1" -v ll="$ll" -v ill="$idle_ll" 'BEGIN {
    n = n > 0 ? n : 1
    printf "%-40s %12d %14.0f %14.0f", b, n, (l - i) / n, i
    if (c != "") printf " %12.1f %12.1f %12.1f", (i1 - ii1) / n, (d1 - id1) / n, (ll - ill) / n
    printf "\n" }'
done
