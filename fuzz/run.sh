#!/usr/bin/env bash
# Fuzzes each target for a bounded time (default 60 s each) with cargo-fuzz (nightly).
#   bash fuzz/run.sh [seconds]
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz`. A crash leaves its input
# in fuzz/artifacts/<target>/; turn it into a regression test next to the parser's unit
# tests (or a case in tests/properties.rs) before fixing.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
for target in trace_context config; do
  echo "== $target ($secs s)"
  cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048
done
