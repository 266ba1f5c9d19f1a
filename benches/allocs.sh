#!/usr/bin/env bash
# Heap allocations per proxied request, tracing on and off: the release binary runs under
# heaptrack (apt-get install heaptrack) behind wrk on 127.0.0.1, and the total number of
# allocation calls is divided by the requests served (start-up included, a few thousand
# calls: negligible against the run). Then the call sites above 0.5 per request.
#   bash benches/allocs.sh [seconds=5] [connections=32]
# Needs wrk and heaptrack. Everything stays on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-32}
command -v heaptrack >/dev/null || { echo "needs heaptrack (apt-get install heaptrack)" >&2; exit 1; }
. benches/lib.sh
bench_processes
counts=$(mktemp)
bench_backends "$counts"
out=$(mktemp -d)
for cfg in tracegate-on tracegate-off; do
  heaptrack -o "$out/$cfg" "$bin" run --config "benches/proxy/$cfg.yaml" --workers 1 >/dev/null 2>&1 &
  ht=$!
  pids+=($ht)
  port=$(grep -o '127.0.0.1:180[0-9]*' "benches/proxy/$cfg.yaml" | head -1)
  for _ in $(seq 50); do curl -s -o /dev/null "http://$port/" && break; sleep 0.1; done
  reqs=$(wrk -t1 -c"$conns" -d"${secs}s" "http://$port/" | awk '/requests in/ {print $1}')
  pkill -INT -f "$bin run --config benches/proxy/$cfg.yaml" || true
  # heaptrack's script ends once its recording is complete (a file read earlier can hold
  # only the start-up's allocations).
  wait "$ht" || true
  report=$(heaptrack_print -f "$out/$cfg.zst" --print-allocators 1 --print-peaks 0 \
    --print-temporary 0 --print-leaks 0 -n 40 2>/dev/null)
  calls=$(echo "$report" | awk '/^calls to allocation functions:/ {print $5}')
  echo "$cfg c=$conns: $reqs requests, $calls allocation calls: $(awk -v c="$calls" -v r="$reqs" 'BEGIN {printf "%.1f", c / r}') per request"
  # Each site: its count per request and the first frames that are not the allocator's.
  echo "$report" | python3 -c '
import re, sys
reqs = int(sys.argv[1])
lines = sys.stdin.read().split("\n")
i = 0
while i < len(lines):
    m = re.match(r"\s*(\d+) calls with .* from:", lines[i])
    i += 1
    if not m:
        continue
    frames = []
    while i < len(lines) and lines[i].startswith("    ") and not re.match(r"\s*\d+ calls", lines[i]):
        f = lines[i].strip()
        i += 1
        if f.startswith(("in /", "at /")) or re.search(r"alloc::|__rust|raw_vec|RawVec|_RNv|malloc|^core::|^0x", f):
            continue
        f = re.sub(r"::h[0-9a-f]{16}$", "", f)
        for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$u7b$", "{"), ("$u7d$", "}"), ("..", "::")):
            f = f.replace(a, b)
        frames.append(f[:80])
    n = int(m.group(1))
    if n >= reqs / 2:
        print(f"  {n / reqs:4.1f}  " + " <- ".join(frames[:3]))
' "$reqs"
done
rm -rf "$out"
