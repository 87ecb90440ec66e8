#!/usr/bin/env bash
# CUDA variant of libperforated, built and link-checked on every CI run (CI has no GPU).
#   1. configure + build with -DPERF_WITH_CUDA=ON into a temporary directory (default architectures,
#      or PERF_CUDA_ARCHITECTURES="..." to override);
#   2. check the result: the CUDA runtime and cuBLAS are linked and resolve, the public API is exported
#      (perf_context_create and the *_ctx entry points), nothing else is exported, no perf_ symbol is
#      left undefined;
#   3. load it from Python (PERFORATED_LIBRARY): build_info says "CUDA on", the device count is read
#      without error, and tests/test_cuda.py runs (its GPU tests run with --run-gpu where a GPU exists,
#      and skip otherwise).
# Needs nvcc (CUDA >= 12) on PATH or in /usr/local/cuda/bin, and a Python with numpy, cffi, pytest.
# Budget: about 1.5-2 minutes on 2 cores (5 SASS architectures + PTX).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
if ! command -v nvcc >/dev/null; then
    echo "cuda_build: nvcc not found (install the CUDA toolkit or put it on PATH)" >&2
    exit 1
fi

build="$(mktemp -d "${TMPDIR:-/tmp}/perforated-cuda.XXXXXX")"
trap 'rm -rf "$build"' EXIT
args=(-DPERF_WITH_CUDA=ON -DPython3_EXECUTABLE="$(command -v "$python")")
if [[ -n "${PERF_CUDA_ARCHITECTURES:-}" ]]; then
    args+=(-DCMAKE_CUDA_ARCHITECTURES="$PERF_CUDA_ARCHITECTURES")
fi
start=$SECONDS
cmake -S . -B "$build" "${args[@]}" >"$build/configure.log" || { cat "$build/configure.log"; exit 1; }
grep "perforated:" "$build/configure.log"
cmake --build "$build"
echo "cuda_build: configure + build took $((SECONDS - start)) s"

lib="$build/libperforated.so"
fail() { echo "cuda_build: FAILED: $*" >&2; exit 1; }
deps="$(ldd "$lib")"
for want in libcudart libcublas; do
    grep -q "$want" <<<"$deps" || fail "$lib does not link $want"
done
if grep -q "not found" <<<"$deps"; then fail "unresolved libraries: $(grep 'not found' <<<"$deps")"; fi
exported="$(nm -D --defined-only "$lib" | awk '$2 == "T" {print $3}')"
for sym in perf_context_create perf_cuda_device_count perf_device_alloc perf_memcpy_to_device \
           perf_conv_plan_create_ctx perf_pool_plan_create_ctx perf_relu_forward_ctx perf_fc_forward_ctx \
           perf_conv_forward; do
    grep -qx "$sym" <<<"$exported" || fail "$sym is not exported"
done
others="$(grep -v '^perf_' <<<"$exported" || true)"
[[ -z "$others" ]] || fail "symbols exported besides the perf_ API: $others"
undefined="$(nm -D --undefined-only "$lib" | awk '{print $2}' | grep '^perf_' || true)"
[[ -z "$undefined" ]] || fail "undefined perf_ symbols: $undefined"
echo "cuda_build: links $(grep -oE 'lib(cudart|cublas)\.so[.0-9]*' <<<"$deps" | sort -u | tr '\n' ' ')and exports $(wc -l <<<"$exported") perf_ functions"

export PERFORATED_LIBRARY="$lib"
PYTHONPATH="$repo/bindings/python${PYTHONPATH:+:$PYTHONPATH}" "$python" - <<'PY'
import perforated as P
info = P.build_info()
assert "CUDA on" in info, info
print("cuda_build:", info, "| CUDA devices:", P.cuda_device_count())
PY
PYTHONPATH="$repo/bindings/python${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pytest -q -p no:cacheprovider \
    --run-gpu tests/test_cuda.py
echo "cuda_build: all checks passed"
