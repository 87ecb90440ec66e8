#!/usr/bin/env bash
# Build the libFuzzer harness of the C API and fuzz it.
#
#   fuzz/run.sh [SECONDS]          build, replay fuzz/crashes/ (regressions) and fuzz/corpus/, then fuzz
#                                  for SECONDS (default 60)
#   FUZZ_ARGS="-runs=1000000" fuzz/run.sh 0   any libFuzzer options; SECONDS=0 means no time limit
#   fuzz/run.sh --build-only       build fuzz/build/fuzz_api and stop
#   fuzz/build/fuzz_api fuzz/crashes/FILE     replay one input (prints the violated rule / sanitizer report)
#
# Needs clang with the libFuzzer runtime: on Debian 12 `apt-get install clang` is enough (clang-14 ->
# libclang-common-14-dev -> libclang-rt-14-dev, which holds libFuzzer); the script checks and says so.
# The library sources are compiled into the fuzzer together with a sanitized reference SGEMM
# (fuzz/cblas_ref.c) instead of OpenBLAS, without OpenMP (one thread), so no Python package and no
# BLAS install are needed. New inputs that reach new code go to fuzz/build/corpus (not committed);
# crashes to fuzz/crashes/ (commit the reproducers that matter: they are replayed as regressions).
# Exit status: 0 when no violation was found, non-zero otherwise (libFuzzer's).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cc="${FUZZ_CC:-clang}"
build="$here/build"
mkdir -p "$build" "$build/corpus" "$here/crashes"

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz/run.sh: $cc not found (install clang, or set FUZZ_CC)" >&2
    exit 2
fi
probe="$build/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$build/probe" 2>/dev/null; then
    echo "fuzz/run.sh: $cc cannot link -fsanitize=fuzzer (Debian/Ubuntu: apt-get install libclang-rt-14-dev," \
         "matching your clang version)" >&2
    exit 2
fi

srcs=("$repo"/libperf/src/*.c "$repo"/libperf/src/cpu/*.c "$here/cblas_ref.c" "$here/fuzz_api.c")
# Rebuild only when a source changed.
if [[ ! -x "$build/fuzz_api" ]] || [[ -n "$(find "${srcs[@]}" "$here/include" "$repo/libperf/include" \
        -newer "$build/fuzz_api" -print -quit)" ]]; then
    echo "fuzz/run.sh: building $build/fuzz_api"
    "$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Wall -Wextra -Wno-unknown-pragmas -Wno-unused-parameter \
        -I"$here/include" -I"$repo/libperf/include" -I"$repo/libperf/src" \
        "${srcs[@]}" -lm -o "$build/fuzz_api"
fi
[[ "${1:-}" == "--build-only" ]] && exit 0

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# Regression: every reproducer kept in fuzz/crashes/ must now run clean.
shopt -s nullglob
repros=("$here"/crashes/*)
if (( ${#repros[@]} )); then
    echo "fuzz/run.sh: replaying ${#repros[@]} reproducer(s) from fuzz/crashes/"
    "$build/fuzz_api" -timeout=10 "${repros[@]}" >"$build/replay.log" 2>&1 || {
        tail -40 "$build/replay.log" >&2
        echo "fuzz/run.sh: a reproducer in fuzz/crashes/ fails again (full log: $build/replay.log)" >&2
        exit 1
    }
fi

seconds="${1:-60}"
args=(-timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1
      -artifact_prefix="$here/crashes/")
[[ "$seconds" != 0 ]] && args+=(-max_total_time="$seconds")
# shellcheck disable=SC2086
exec "$build/fuzz_api" "${args[@]}" ${FUZZ_ARGS:-} "$build/corpus" "$here/corpus"
