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

# The load generator, on core 1 (`pin1`): LOAD=h1 (the default) is wrk -t1 over HTTP/1.1;
# LOAD=h2 is h2load -t1 (apt-get install nghttp2-client) over cleartext HTTP/2 with prior
# knowledge (h2c), STREAMS (default 1) concurrent streams on each connection.
load=${LOAD:-h1}
streams=${STREAMS:-1}
case $load in h1|h2) ;; *) echo "LOAD is h1 or h2, not $load" >&2; exit 2;; esac

# One load run: load_run URL CONNECTIONS SECONDS prints "requests req/s p50_ms p99_ms".
# The array load_headers (-H "Name: value" pairs), when set, adds request headers.
load_run() {
  local out log
  if [ "$load" = h1 ]; then
    out=$(timeout $(($3 + 30)) "${pin1[@]}" wrk -t1 -c"$2" -d"$3s" --latency \
      ${load_headers[@]+"${load_headers[@]}"} "$1")
    if grep -q "Non-2xx" <<<"$out"; then
      echo "$1: $(grep Non-2xx <<<"$out" | xargs): not all proxied" >&2
    fi
    echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
      "$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")") $(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
    return
  fi
  # h2load prints no percentiles: they come from its log, one line a request (start time,
  # status, duration in µs from the request's start to its response's end). A run with a
  # request failed or answered other than 2xx fails.
  log=$(mktemp)
  out=$(timeout $(($3 + 30)) "${pin1[@]}" h2load -t1 -c"$2" -m"$streams" -D "$3" --log-file="$log" \
    ${load_headers[@]+"${load_headers[@]}"} "$1")
  if python3 - "$log" "$out" <<'PY'
import sys
lines = sys.argv[2].splitlines()
req = next(l for l in lines if l.startswith("requests:")).split()
done, ok = int(req[5]), int(req[7])
codes = next(l for l in lines if l.startswith("status codes:")).split()
# (Its status counts may include responses that ended after the measured time.)
if ok != done or any(int(codes[i]) for i in (4, 6, 8)):
    sys.exit(f"h2load: {' '.join(req)} / {' '.join(codes)}")
rate = next(l for l in lines if l.startswith("finished in")).split()[3]
us = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip())
pct = lambda q: us[min(len(us) - 1, int(q * len(us)))] / 1000
print(done, rate, round(pct(0.50), 3), round(pct(0.99), 3))
PY
  then rm -f "$log"; else rm -f "$log"; return 1; fi
}

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
  # A port taken already (a process left from another run) would leave ours unbound and
  # every proxy measured against that one instead.
  local port
  for port in 18000 14317; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is in use already (a process left from another run?)" >&2
      exit 1
    fi
  done
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
