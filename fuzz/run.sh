#!/usr/bin/env bash
# Runs every fuzz target in turn, one process each (nice, one core), and prints one line of
# figures per target: executions, executions per second, wall time.
#
#   fuzz/run.sh -max_total_time=20        # a short pass (what CI does)
#   fuzz/run.sh -runs=10000000            # the long pass recorded in fuzz/README.md
#
# New inputs go to a scratch corpus under $FUZZ_WORK (default: a temporary directory); the
# committed seeds in fuzz/corpus/<target>/ are read, never written. A crash leaves its input in
# the scratch directory and stops the script.
set -euo pipefail
cd "$(dirname "$0")"
work=${FUZZ_WORK:-$(mktemp -d)}
cargo +nightly fuzz build -s none
bin=target/x86_64-unknown-linux-gnu/release
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target/new"
    start=$(date +%s.%N)
    nice -n 10 "$bin/$target" -max_len=8192 -print_final_stats=1 \
        -artifact_prefix="$work/$target/" "$@" \
        "$work/$target/new" "corpus/$target" >"$work/$target/log" 2>&1 || {
        echo "fuzz: $target FAILED, see $work/$target/log"
        tail -n 30 "$work/$target/log"
        exit 1
    }
    end=$(date +%s.%N)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target/log")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$target/log")
    printf 'fuzz: %-18s %12s runs %9s exec/s %8.1f s\n' "$target" "$runs" "$speed" \
        "$(echo "$end - $start" | bc)"
done
