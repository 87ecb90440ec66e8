#!/usr/bin/env bash
# Build libperforated with CMake, install it into a temporary prefix, then build and run the C example
# twice: once linked through pkg-config (cc $(pkg-config --cflags --libs perforated)), once through
# find_package(perforated) in examples/cmake_consumer. No environment variables are needed at run time:
# the executable has a RUNPATH to the library, the library one to its BLAS.
#
#   examples/run.sh                      # default BLAS: the scipy-openblas32 wheel of `python3`
#   PYTHON=/path/to/python examples/run.sh
#   PERF_BLAS=system examples/run.sh     # or MKL; extra CMake flags in CMAKE_ARGS
#   KEEP=1 examples/run.sh               # keep the temporary directory
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
blas="${PERF_BLAS:-scipy-openblas}"
jobs="${JOBS:-2}"
work="$(mktemp -d "${TMPDIR:-/tmp}/perforated-example.XXXXXX")"
if [[ -z "${KEEP:-}" ]]; then trap 'rm -rf "$work"' EXIT; else echo "keeping $work"; fi

if [[ "$blas" == "scipy-openblas" ]] && ! "$python" -c "import scipy_openblas32" 2>/dev/null; then
    echo "run.sh: $python cannot import scipy_openblas32; pip install scipy-openblas32," \
         "set PYTHON=..., or choose PERF_BLAS=system" >&2
    exit 1
fi

echo "== configure, build and install libperforated into $work/prefix"
# shellcheck disable=SC2086
cmake -S "$repo" -B "$work/build" -DPERF_BLAS="$blas" \
      -DPython3_EXECUTABLE="$(command -v "$python")" ${CMAKE_ARGS:-} >"$work/configure.log" \
    || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j "$jobs" >"$work/build.log" || { cat "$work/build.log"; exit 1; }
cmake --install "$work/build" --prefix "$work/prefix" >/dev/null

pcdir="$(dirname "$(find "$work/prefix" -name perforated.pc | head -n 1)")"
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

echo "== pkg-config: cc conv_example.c \$(pkg-config --cflags --libs perforated)"
# shellcheck disable=SC2046
"${CC:-cc}" -std=c11 -Wall -Wextra -Werror -O2 "$here/conv_example.c" \
    $(pkg-config --cflags --libs perforated) -lm -o "$work/conv_example"
"$work/conv_example"

echo "== CMake: find_package(perforated) in examples/cmake_consumer"
cmake -S "$here/cmake_consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" \
      >"$work/consumer.log" || { cat "$work/consumer.log"; exit 1; }
cmake --build "$work/consumer" -j "$jobs" >>"$work/consumer.log" || { cat "$work/consumer.log"; exit 1; }
"$work/consumer/conv_example" >/dev/null
echo "cmake consumer: ok"
