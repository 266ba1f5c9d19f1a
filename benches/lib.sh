# Sourced by the scripts in benches/ and by tests/soak/run.sh (from the repo
# root): builds the release binary and the OTLP sink (benches/otlp_sink.rs) and sets $bin
# and $sink to them. TG_BIN=path measures that tracegate instead of the release build (e.g.
# the PGO build: `TG_BIN=target/pgo/tracegate bash benches/cpu_split.sh`); the echo
# upstream runs it too.
sink=$(cargo bench --bench otlp_sink --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m.get("target",{}).get("name")=="otlp_sink": print(m["executable"])')
# After the sink: `cargo bench` builds tracegate too, with the dev-dependencies' features
# (tokio's `full`: parking_lot, fs, process...) and leaves that build at
# target/release/tracegate (0.4 MB larger, ~0.6 MiB more resident). `cargo build` puts the
# binary users run back (a copy when nothing changed).
cargo build --release -q
bin=${TG_BIN:-target/release/tracegate}

# For the scripts that start their own peers: background processes added to `pids` are
# stopped on exit; `pin0`/`pin1` prefix a command to pin it to core 0/1 where taskset exists.
bench_processes() {
  pids=()
  cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
  trap cleanup EXIT
  pin0=(); pin1=()
  if command -v taskset >/dev/null; then pin0=(taskset -c 0); pin1=(taskset -c 1); fi
}

# The upstream's mode: `tracegate echo --fixed` (why: `demo::fixed`'s comment), unless
# BENCH_ECHO=json asks for the JSON echo of what arrived, the upstream of the results before
# 2026-12-04's second run.
echo_mode=(--fixed)
if [ "${BENCH_ECHO:-fixed}" = json ]; then echo_mode=(); fi

# A latency as wrk prints it (`696.00us`, `1.21ms`, `1.05s`) in milliseconds.
to_ms() { python3 -c "
v='$1'
print(round(float(v[:-2])/1000,3) if v.endswith('us') else round(float(v[:-2]),3) if v.endswith('ms') else round(float(v[:-1])*1000,3))"; }

# Spans the OTLP sink has counted so far, from its count file ($1). The sink rewrites the
# file each second (truncate, write): a read in between finds it empty (one such read gave
# round 4 of a6d3cdb's run -6.99 spans a request), so read again.
sink_spans() {
  local s _ i
  for i in 1 2 3 4 5; do
    read -r s _ < "$1" 2>/dev/null && [ -n "$s" ] && { echo "$s"; return; }
    sleep 0.1
  done
  echo 0
}

# The load side the proxies are measured against, on core 1 (after bench_processes or the
# caller's own pids/pin1): the echo upstream on 127.0.0.1:18000 and the OTLP sink on
# 127.0.0.1:14317, which writes what it decoded to the file named by $1.
bench_backends() {
  "${pin1[@]}" "$bin" echo --listen 127.0.0.1:18000 --workers 1 ${echo_mode[@]+"${echo_mode[@]}"} 2>/dev/null & pids+=($!)
  "${pin1[@]}" "$sink" 127.0.0.1:14317 "$1" >/dev/null & pids+=($!)
}

# A peer's binary (envoy, caddy, nginx): from $PEERS_BIN when it is there, else from PATH
# (nginx also from /usr/sbin); empty when absent.
find_peer() {
  if [ -n "${PEERS_BIN:-}" ] && [ -x "$PEERS_BIN/$1" ]; then echo "$PEERS_BIN/$1"
  elif command -v "$1"; then :
  elif [ -x "/usr/sbin/$1" ]; then echo "/usr/sbin/$1"
  fi
}

# A process and its children (nginx's workers), one pid per line.
proc_tree() { echo "$1"; pgrep -P "$1" || true; }
