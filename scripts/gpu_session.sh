#!/usr/bin/env bash
# The device checks of issue 5 (and GPU training for issue 4) in one prepared run, for a session that
# is lent a GPU machine (the `device` tool; nothing can be fetched there, and it has Python 3.12 with
# numpy, CuPy, PyTorch, pytest, hypothesis, pillow and matplotlib, but not cffi or OpenBLAS's wheel).
#
# Here, before the first device call (once; wheels and data travel with `carry: [".whl", ".data"]`,
# about 30 MB; ../shared does not travel):
#   printf '/.whl/\n/.data/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl cffi pycparser scipy-openblas32
#   mkdir -p .data && cp ../shared/datasets/cifar10-jpeg.tar.gz .data/
# Then, with the device tool (about 10 minutes of the 15; set TRAIN_SECONDS to fit what is left):
#   run(command="TRAIN_SECONDS=180 bash scripts/gpu_session.sh", carry=[".whl", ".data"], timeout_s=600)
# What comes back ($OUT holds at most 8 files): session.log (every step's output), results.tar.gz
# (the results/ files written there) and nin_gpu.tar.gz (the training run; unpack it into .data/ to
# resume it on the next GPU session, or on a CPU: perforated.train --out DIR --resume).
#
# Steps: install the wheels; build libperforated with CUDA for sm_90 (Hopper) only, to save time;
# tests/test_cuda.py and tests/test_cuda_model.py with --run-gpu (every op and whole NIN, CUDA vs
# CPU); bench.conv_layers (per-layer GPU table: 0.8 x ideal check) and bench.tables --quick
# --no-lowrank (GPU columns, cuDNN peer); then NIN training on the GPU from the committed weights for
# TRAIN_SECONDS (default 180; with batch normalisation, folded into the saved weights, TRAIN_EPOCHS
# epochs of cosine schedule, default 15, from nin_cifar10.npz). Every step is cut to what is left of BUDGET (default 560 s).
set -uo pipefail
out="${OUT:-/tmp/gpu_out}"
mkdir -p "$out"
log() { echo "[gpu_session $(date +%H:%M:%S)] $*" | tee -a "$out/session.log"; }
work=/tmp/gpu_work
mkdir -p "$work/results"
budget="${BUDGET:-560}"   # seconds: the device run's timeout_s less a margin for the transfers
bundle() { # two tarballs (each under the 16 MiB a returned file may have), rewritten after each step
    tar -czf "$out/results.tar.gz" -C "$work" results 2>/dev/null
    [[ -d "$work/nin_gpu" ]] && tar -czf "$out/nin_gpu.tar.gz" -C "$work" nin_gpu 2>/dev/null
    return 0
}
trap bundle EXIT
step() { # step NAME TIMEOUT COMMAND...: run within what is left of the budget, log, bundle
    local name="$1" limit="$2"; shift 2
    local left=$(( budget - SECONDS - 30 ))
    (( left < limit )) && limit=$left
    if (( limit < 10 )); then log "$name: skipped (budget spent)"; return; fi
    log "$name (at most ${limit} s)"
    timeout "$limit" "$@" >>"$out/session.log" 2>&1
    log "$name: exit $?"
    bundle
}

if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { log "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/bindings/python:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi -L >>"$out/session.log" 2>&1

step "configure (CUDA, sm_90)" 120 cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DPERF_WITH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DPython3_EXECUTABLE="$(command -v python3)"
step "build" 240 cmake --build build-gpu -j 16
[[ -f build-gpu/libperforated.so ]] || { log "no library built: stopping"; exit 1; }
export PERFORATED_LIBRARY="$PWD/build-gpu/libperforated.so"
step "library" 60 python3 -c "import perforated as p; print(p.build_info()); print('GPU:', p.cuda_available())"

step "CUDA vs CPU tests" 180 python3 -m pytest -q --run-gpu -p no:cacheprovider tests/test_cuda.py \
    tests/test_cuda_model.py
step "per-layer GPU table (VGG-16, quick)" 120 python3 -m bench.conv_layers --quick --networks vgg16 \
    --out "$work/results"
step "tables --quick (GPU columns)" 120 python3 -m bench.tables --quick --no-lowrank --no-peers --out "$work/results"

# NIN training for TRAIN_SECONDS (cut to the budget): a run carried in as .data/nin_gpu (unpacked from an
# earlier session's nin_gpu.tar.gz) goes on with --resume, else a new one starts from the committed weights
train=(python3 -m perforated.train --device cuda --out "$work/nin_gpu")
if [[ -f .data/nin_gpu/checkpoint.npz ]]; then
    cp -r .data/nin_gpu "$work/" && train+=(--resume)
else
    train+=(--network nin --batchnorm --weights results/models/nin_cifar10.npz --epochs "${TRAIN_EPOCHS:-15}"
            --batch 128 --lr 0.05 --warmup 0.3 --weight-decay 5e-4 --schedule cosine --eval-every 5 --progress 50)
fi
train+=(--data "${CIFAR:-.data/cifar10-jpeg.tar.gz}")
step "NIN training on the GPU (exit 124: stopped by the limit; resumable)" "${TRAIN_SECONDS:-180}" "${train[@]}"
