#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20) on the stable toolchain, without a
# sanitizer (`-Zsanitizer` needs nightly). CI: `fuzz/run.sh 20`; longer on demand, e.g.
# `fuzz/run.sh 3600`, or one target: `cargo fuzz run --sanitizer none credentials`.
# A crash stops the run and leaves the input in fuzz/artifacts/TARGET/; reproduce it with
# `cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-…`, then add it to the
# agent's unit tests as a regression test. FUZZ_SEED (CI sets 1) fixes libFuzzer's random
# seed, so a CI run explores the same inputs each time; unset, every run explores new ones.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
start=$SECONDS
cargo fuzz build --sanitizer none
echo "fuzz: build took $((SECONDS - start)) s"
targets=$(cargo fuzz list)
for t in $targets; do
    mkdir -p "corpus/$t" "seeds/$t"
    # The first directory receives new inputs; seeds/ (committed) only seeds the run.
    log=$(mktemp)
    status=0
    cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -seed="${FUZZ_SEED:-0}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    echo "fuzz: $t: $(grep -E '^stat::number_of_executed_units' "$log" | tr -s ' ' | cut -d' ' -f2) runs"
    if [ "$status" -ne 0 ]; then
        grep -E -A8 'panicked at|==[0-9]+== ERROR' "$log" | head -40 >&2 || true
        rm -f "$log"
        echo "fuzz: $t FAILED (status $status); the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: $(echo $targets | wc -w) targets, ${seconds} s each, no crash, total $((SECONDS - start)) s"
