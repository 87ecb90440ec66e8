"""A process that used the library exits cleanly (issue 29).

cffi closes the library when its ``lib`` object is collected at interpreter shutdown. The OpenMP
worker threads started by the library's loops were still alive then; once the library (and libgomp
with it) was unmapped, a worker that ran again executed unmapped code and the process died with
SIGSEGV at exit, about once in 25 runs of a short script (and almost every run with
OMP_WAIT_POLICY=active, where the workers spin instead of sleeping). The library now stays loaded
for the life of the process: it is linked with ``-z nodelete`` and the loader opens it with
RTLD_NODELETE. This test runs such a script a few hundred times and requires exit status 0 each time.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import perforated as pf

#: Runs of the script, half with the default OpenMP wait policy and half with active waiting.
RUNS = int(os.environ.get("PERF_TEST_EXIT_RUNS", "240"))

SCRIPT = r"""
import sys
import numpy as np
import perforated as pf

rng = np.random.default_rng(5)
x = rng.standard_normal((4, 8, 12, 12), dtype=np.float32)
w = rng.standard_normal((16, 8, 3, 3), dtype=np.float32)
dy = rng.standard_normal((4, 16, 12, 12), dtype=np.float32)
for _ in range(3):
    dx, dw, db = pf.conv2d_backward(x, w, dy, pad=1)
np.save(sys.argv[1], dw)
"""


def _env() -> dict:
    """The children import the same package and library as this process (and inherit LD_PRELOAD,
    for the sanitizer pass); OMP_* settings of the caller are dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    package_parent = str(Path(pf.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, env.get("PYTHONPATH", "")])
    env["PERFORATED_LIBRARY"] = str(pf.LIBRARY_PATH)
    env["PYTHONFAULTHANDLER"] = "1"  # a crash prints where the Python code was
    return env


def test_process_exits_cleanly_after_conv2d_backward_every_time(tmp_path):
    script = tmp_path / "short.py"
    script.write_text(SCRIPT)
    env = _env()
    active = dict(env, OMP_WAIT_POLICY="active")

    def run(i):
        out = tmp_path / f"dw{i}.npy"
        proc = subprocess.run([sys.executable, str(script), str(out)], env=active if i % 2 else env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
        return i, proc.returncode, proc.stderr, out

    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as ex:
        results = list(ex.map(run, range(RUNS)))
    failed = [(i, rc) for i, rc, _, _ in results if rc != 0]
    if failed:
        i, rc, err, _ = next(r for r in results if r[1] != 0)
        raise AssertionError(f"{len(failed)} of {RUNS} runs exited non-zero (run, status): {failed[:20]}; "
                             f"stderr of run {i} (status {rc}):\n{err[-3000:]}")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 8, 12, 12), dtype=np.float32)
    w = rng.standard_normal((16, 8, 3, 3), dtype=np.float32)
    dy = rng.standard_normal((4, 16, 12, 12), dtype=np.float32)
    _, want, _ = pf.conv2d_backward(x, w, dy, pad=1)
    for i, _, _, out in results:  # every run finished its work before exiting
        np.testing.assert_allclose(np.load(out), want, rtol=1e-5, atol=1e-4, err_msg=f"run {i}")
