#!/usr/bin/env bash
# Build (if needed) and run every libFuzzer target tests/fuzz/fuzz_*.c for a
# bounded time each: ./run_fuzz.sh [SECONDS_PER_TARGET (default 60)].
# Seeds: tests/fuzz/corpus_<name>/ (copied; the checked-in corpus is never
# modified), dictionary tests/fuzz/<name>.dict when present. Findings
# (crashes, leaks, timeouts, out-of-memory) are written to
# $PHASEID_FUZZ_OUT (default build-fuzz/fuzz-findings/) and make the script
# exit nonzero.
set -euo pipefail

secs="${1:-60}"
case "$secs" in ''|*[!0-9]*) echo "usage: $0 [seconds per target]" >&2; exit 2;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/../.." && pwd)"
build="${PHASEID_FUZZ_BUILD:-$src/build-fuzz}"
out="${PHASEID_FUZZ_OUT:-$build/fuzz-findings}"
cc="${CC:-clang}"

if ! command -v "$cc" >/dev/null; then
    echo "run_fuzz.sh: $cc not found (libFuzzer needs clang)" >&2
    exit 2
fi
if [ ! -f "$build/CMakeCache.txt" ]; then
    CC="$cc" cmake -S "$src" -B "$build" -DPHASEID_FUZZ=ON -DPHASEID_CUDA=OFF -DPHASEID_TESTS=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi

targets=()
for f in "$here"/fuzz_*.c; do
    [ -e "$f" ] || continue
    targets+=("$(basename "$f" .c)")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "run_fuzz.sh: no fuzz targets in $here" >&2
    exit 2
fi
if ! make -C "$build" -j"$(nproc)" "${targets[@]}" >"$build/fuzz-make.log" 2>&1; then
    cat "$build/fuzz-make.log" >&2
    exit 2
fi

mkdir -p "$out"
status=0
for t in "${targets[@]}"; do
    corpus_name="corpus_${t#fuzz_}"
    work="$(mktemp -d)"
    if [ -d "$here/$corpus_name" ]; then cp -r "$here/$corpus_name/." "$work/"; fi
    args=(-max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=4096
          -print_final_stats=1 -artifact_prefix="$out/$t-")
    if [ -f "$here/${t#fuzz_}.dict" ]; then args+=(-dict="$here/${t#fuzz_}.dict"); fi
    echo "== $t: ${secs}s, seeds from ${corpus_name}"
    log="$out/$t.log"
    if "$build/tests/$t" "${args[@]}" "$work" >"$log" 2>&1; then
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|^Done" "$log" || true
    else
        status=1
        echo "!! $t found a problem; log: $log, inputs: $out/$t-*" >&2
        grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -20 >&2 || true
    fi
    rm -rf "$work"
done
exit "$status"
