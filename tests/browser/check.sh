#!/usr/bin/env bash
# Browser check of the built-in trace viewer: runs `tracegate demo`, sends traffic through
# it, loads /traces in headless Chromium (Debian's `chromium`), and checks that the rows and
# a trace's waterfall render in the DOM. Leaves a screenshot in target/browser/.
#   bash tests/browser/check.sh [path/to/tracegate]
# 127.0.0.1 only; every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/debug/tracegate}
out=target/browser
mkdir -p "$out"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "chromium is not installed (apt-get install chromium)" >&2
  exit 1
fi

proxy=127.0.0.1:18480
admin=127.0.0.1:19480
"$bin" demo --listen "$proxy" --admin "$admin" >"$out/demo.log" 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://$admin/readyz" >/dev/null && break; sleep 0.1; done

# Traffic: a few requests, one continuing a caller's trace.
for i in 1 2 3; do curl -sf -o /dev/null "http://$proxy/api/item/$i"; done
trace=4bf92f3577b34da6a3ce929d0e0e4736
curl -sf -o /dev/null -H "traceparent: 00-$trace-00f067aa0ba902b7-01" "http://$proxy/api/checkout"
for _ in $(seq 1 50); do
  curl -sf "http://$admin/traces.json" | grep -q "$trace" && break
  sleep 0.1
done

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$(mktemp -d)" --virtual-time-budget=5000 --window-size=1400,900)
url="http://$admin/traces#trace=$trace"
timeout 60 "$browser" "${flags[@]}" --dump-dom "$url" >"$out/traces.html" 2>"$out/chromium.log"
timeout 60 "$browser" "${flags[@]}" --screenshot="$out/traces.png" "$url" >/dev/null 2>>"$out/chromium.log"

rows=$(grep -o 'class="trace-row"' "$out/traces.html" | wc -l)
bars=$(grep -o 'class="bar[^"]*"' "$out/traces.html" | wc -l)
title=$(grep -c "Trace $trace" "$out/traces.html" || true)
echo "browser check: $rows rows, $bars waterfall bars, trace title shown: $title"
[ "$rows" -ge 4 ] || { echo "FAIL: expected at least 4 request rows" >&2; exit 1; }
[ "$bars" -ge 2 ] || { echo "FAIL: expected the SERVER and CLIENT bars of the waterfall" >&2; exit 1; }
[ "$title" -ge 1 ] || { echo "FAIL: the trace view did not open" >&2; exit 1; }
[ -s "$out/traces.png" ] || { echo "FAIL: no screenshot" >&2; exit 1; }
echo "browser check passed (screenshot: $out/traces.png)"
