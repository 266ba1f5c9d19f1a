# Sourced by benches/quick.sh, benches/proxy/run.sh and tests/soak/run.sh (from the repo
# root): builds the release binary and the OTLP sink (benches/otlp_sink.rs) and sets $bin
# and $sink to them.
cargo build --release -q
bin=target/release/tracegate
sink=$(cargo bench --bench otlp_sink --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("executable") and m.get("target",{}).get("name")=="otlp_sink": print(m["executable"])')
