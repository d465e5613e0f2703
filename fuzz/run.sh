#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Run every fuzz target (or those named) for RUNS inputs each (default 10000) under ASan+UBSan.
#
#   fuzz/run.sh [TARGET...]            RUNS=100000 fuzz/run.sh fuzz-options
#
# Builds with fuzz/build.sh first (BUILDDIR, default build-fuzz). Each target starts from a copy of its
# seed corpus in fuzz/corpus/<target>; what it finds new stays in BUILDDIR/fuzz/work/<target>. A
# crash, leak, sanitizer report or failed invariant stops that target: its reproducer is copied to
# fuzz/crashes/<target>/ (replayed by the `fuzz` test suite from then on) and the script exits 1.
# The archive target is run as root inside its read-only sandbox (see fuzz-archive-import.c).
set -uo pipefail

cd "$(dirname "$0")/.."
B=${BUILDDIR:-build-fuzz}
RUNS=${RUNS:-10000}
MAX_LEN=${MAX_LEN:-65536}

mkdir -p "$B"
fuzz/build.sh "$B" >"$B/fuzz-build.log" 2>&1 || { cat "$B/fuzz-build.log"; exit 1; }

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for src in fuzz/fuzz-*.c; do
        targets+=("$(basename "$src" .c)")
    done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}

status=0
printf '%-22s %8s %8s %6s %6s %10s  %s\n' target runs seconds cov ft corpus result
for t in "${targets[@]}"; do
    bin=$B/fuzz/$t
    work=$PWD/$B/fuzz/work/$t
    art=$PWD/$B/fuzz/artifacts/$t
    log=$PWD/$B/fuzz/$t.log
    rm -rf "$work" "$art"
    mkdir -p "$work" "$art"
    cp fuzz/corpus/"$t"/* "$work"/
    start=$(date +%s.%N)
    "$bin" -runs="$RUNS" -max_len="$MAX_LEN" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$art/" "$work" >"$log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    stats=$(grep -E '^#[0-9]+\s+DONE' "$log" | tail -1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$stats")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    result=ok
    if [ $rc -ne 0 ] || [ -n "$(ls -A "$art")" ]; then
        result="FAILED (exit $rc), see $log"
        mkdir -p fuzz/crashes/"$t"
        for f in "$art"/*; do
            [ -e "$f" ] || continue
            cp "$f" fuzz/crashes/"$t"/
            result="$result; reproducer fuzz/crashes/$t/$(basename "$f")"
        done
        status=1
    fi
    printf '%-22s %8s %8.1f %6s %6s %10s  %s\n' "$t" "${runs:-?}" "$(awk "BEGIN { print $end - $start }")" \
        "${cov:-?}" "${ft:-?}" "$(ls "$work" | wc -l)" "$result"
done
exit $status
