"""The speed gates guard: with the engine's SIMD micro-kernels disabled (PERF_ISA=generic, a real fast path
turned off), the gate of our dense NIN against ONNX Runtime fails, naming the gate and the baseline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import isa

ROOT = Path(__file__).resolve().parents[1]

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("timing gates are not run under the AddressSanitizer pass", allow_module_level=True)


def test_disabled_fast_path_fails_the_engine_gate():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("pytest_benchmark")
    baseline = json.loads((ROOT / "benchmarks" / "baseline.json").read_text())
    if "nin_dense_vs_onnxruntime" not in baseline.get(isa(), {}) or isa() == "other":
        pytest.skip(f"no engine gate baseline for {isa()} machines")
    env = dict(os.environ, PERF_ISA="generic")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                           str(ROOT / "benchmarks"), "-k", "nin_dense_engine_vs_onnxruntime"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "nin_dense_vs_onnxruntime: ratio" in done.stdout and "x baseline" in done.stdout
