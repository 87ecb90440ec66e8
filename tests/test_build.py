"""CMake configuration of libperforated (issue 29): configure-only runs in temporary build directories
(a few seconds each; skipped without cmake or outside a source checkout).

- Optimisation comes from the build type's flags: Debug compiles without -O3, Release with it.
- PERF_SANITIZE flags reach the C compiler only, never nvcc (checked where nvcc exists).
- A plain configure whose Python lacks the scipy-openblas32 wheel falls back to the system BLAS with
  a warning; asking for the wheel explicitly (-DPERF_BLAS=scipy-openblas) still fails clearly.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CMAKE = shutil.which("cmake")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.access("/usr/local/cuda/bin/nvcc", os.X_OK)
                                else None)

pytestmark = pytest.mark.skipif(CMAKE is None or not (REPO / "CMakeLists.txt").is_file(),
                                reason="needs cmake and the source checkout")


def _configure(build: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([CMAKE, "-S", str(REPO), "-B", str(build), "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                           *args], capture_output=True, text=True, env=env, timeout=300)


def _commands(build: Path, suffix: str) -> list:
    entries = json.loads((build / "compile_commands.json").read_text())
    found = [e["command"] for e in entries if e["file"].endswith(suffix)]
    assert found, f"no {suffix} source in {build}/compile_commands.json"
    return found


def _cache(build: Path, name: str) -> str:
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} not in the cache")


def _no_wheel() -> bool:
    return subprocess.run([sys.executable, "-c", "import scipy_openblas32"], capture_output=True).returncode != 0


def _python_without_wheel(tmp_path: Path) -> Path:
    """This interpreter without its site-packages (-S): scipy_openblas32 cannot be imported."""
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    probe = subprocess.run([str(wrapper), "-c", "import scipy_openblas32"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("scipy_openblas32 is importable without site-packages here")
    return wrapper


@pytest.mark.parametrize("build_type, want_o3", [("Debug", False), ("Release", True)])
def test_optimisation_follows_the_build_type(tmp_path, build_type, want_o3):
    done = _configure(tmp_path / "b", f"-DCMAKE_BUILD_TYPE={build_type}", f"-DPython3_EXECUTABLE={sys.executable}",
                      "-DPERF_BLAS=system" if _no_wheel() else "-DPERF_BLAS=scipy-openblas")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for cmd in _commands(tmp_path / "b", ".c"):
        assert ("-O3" in cmd.split()) == want_o3, cmd


@pytest.mark.skipif(NVCC is None, reason="needs nvcc")
def test_sanitizer_flags_reach_the_c_compiler_only(tmp_path):
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(NVCC).parent), os.environ.get("PATH", "")]))
    done = _configure(tmp_path / "b", "-DPERF_WITH_CUDA=ON", "-DPERF_SANITIZE=ON", "-DCMAKE_CUDA_ARCHITECTURES=90",
                      f"-DPython3_EXECUTABLE={sys.executable}",
                      "-DPERF_BLAS=system" if _no_wheel() else "-DPERF_BLAS=scipy-openblas", env=env)
    if done.returncode != 0 and "CUDA" in done.stderr and "perforated: BLAS" in done.stdout:
        pytest.skip("this CUDA toolkit does not configure here: " + done.stderr[-500:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for cmd in _commands(tmp_path / "b", ".cu"):
        assert "-fsanitize" not in cmd, cmd
    for cmd in _commands(tmp_path / "b", ".c"):
        assert "-fsanitize=address,undefined" in cmd, cmd


def test_plain_configure_without_the_wheel_falls_back_to_the_system_blas(tmp_path):
    python = _python_without_wheel(tmp_path)
    done = _configure(tmp_path / "b", f"-DPython3_EXECUTABLE={python}")
    out = done.stdout + done.stderr
    assert "falling back to the system BLAS" in out, out[-3000:]
    if done.returncode != 0:  # no system BLAS on this machine: that must be said plainly
        assert "PERF_BLAS=system: " in out, out[-3000:]
        return
    assert _cache(tmp_path / "b", "PERF_BLAS") == "system"
    assert "perforated: BLAS = system" in done.stdout
    again = _configure(tmp_path / "b")  # a reconfigure keeps the choice, without a new warning
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "perforated: BLAS = system" in again.stdout and "falling back" not in again.stderr


def test_explicit_wheel_request_without_the_wheel_fails_clearly(tmp_path):
    python = _python_without_wheel(tmp_path)
    done = _configure(tmp_path / "b", "-DPERF_BLAS=scipy-openblas", f"-DPython3_EXECUTABLE={python}")
    assert done.returncode != 0
    assert "PERF_BLAS=scipy-openblas needs the scipy-openblas32 wheel" in done.stderr, done.stderr[-3000:]
