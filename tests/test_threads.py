"""Concurrency: several Python threads calling the library at once (cffi releases the GIL during C
calls, so the C code really runs concurrently) must get the results of serial calls.

Shared-state rules checked here (see also the ConvPlan docstring):
  - C plans (conv, pooling) and masks are immutable after creation: safe to share between threads.
  - A Python ``ConvPlan`` owns ONE workspace; its calls are serialised by a per-plan lock, so sharing
    one plan between threads is correct (the threads take turns). Separate plans run in parallel.
  - ``PoolPlan`` has no workspace (nothing to guard); masks are read-only.
  - ``perf_last_error()`` is thread-local: each thread reads the message of its own failure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import perforated as pf
import reference
from perforated import ffi, lib
from helpers import assert_close, randn
from reference import conv_out_size

N_THREADS = 4


def _run_threads(fn, args_list):
    """Run fn(*args) for every args in args_list, all threads released at once by a barrier."""
    barrier = threading.Barrier(len(args_list))

    def task(args):
        barrier.wait()
        return fn(*args)

    with ThreadPoolExecutor(max_workers=len(args_list)) as ex:
        return list(ex.map(task, args_list))


def _conv_case(rng, i):
    """A different small perforated conv for each thread (odd sizes, groups, masks)."""
    h, w = 13 + i, 17 - i
    x = randn(rng, 2, 4, h, w)
    wt = randn(rng, 6, 2, 3, 3)
    b = randn(rng, 6)
    oh, ow = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    mask = pf.make_mask("uniform", (oh, ow), 0.5, seed=i) if i % 2 else None
    return x, wt, b, mask


def test_conv2d_from_threads_equals_serial(rng):
    cases = [_conv_case(rng, i) for i in range(N_THREADS)]

    def work(x, wt, b, mask):
        outs = []
        for _ in range(3):
            y = pf.conv2d(x, wt, b, stride=2, pad=1, groups=2, mask=mask)
            dx, dw, db = pf.conv2d_backward(x, wt, np.ones_like(y), stride=2, pad=1, groups=2,
                                            mask=mask)
            outs.append((y, dx, dw, db))
        return outs

    serial = [work(*c) for c in cases]
    parallel = _run_threads(work, cases)
    for s_runs, p_runs in zip(serial, parallel):
        for s, p in zip(s_runs, p_runs):
            for a, b in zip(s, p):
                np.testing.assert_array_equal(a, b)


def test_separate_conv_plans_in_threads(rng):
    plans, inputs = [], []
    for i in range(N_THREADS):
        x, wt, b, mask = _conv_case(rng, i)
        plans.append(pf.ConvPlan(2, 4, x.shape[2:], 6, 3, stride=2, pad=1, groups=2, mask=mask))
        inputs.append((x, wt, b))

    def work(plan, x, wt, b):
        return [plan.forward(x, wt, b) for _ in range(5)]

    serial = [work(p, *a) for p, a in zip(plans, inputs)]
    parallel = _run_threads(work, [(p,) + a for p, a in zip(plans, inputs)])
    for s, p in zip(serial, parallel):
        for a, b in zip(s, p):
            np.testing.assert_array_equal(a, b)


def test_one_conv_plan_shared_by_threads(rng):
    """The plan's single workspace is guarded by its lock: every thread gets its serial result."""
    h, w = 23, 19
    plan = pf.ConvPlan(2, 5, (h, w), 7, 3, pad=1, mask=pf.make_mask("grid", (h, w), 0.6, seed=3))
    inputs = [(randn(rng, 2, 5, h, w), randn(rng, 7, 5, 3, 3)) for _ in range(N_THREADS)]
    dys = [randn(rng, *plan.y_shape) for _ in range(N_THREADS)]
    expected = [(plan.forward(x, wt), plan.backward_data(wt, dy), plan.backward_filter(x, dy))
                for (x, wt), dy in zip(inputs, dys)]

    def work(i):
        (x, wt), dy = inputs[i], dys[i]
        got = []
        for _ in range(20):
            got.append((plan.forward(x, wt), plan.backward_data(wt, dy), plan.backward_filter(x, dy)))
        return got

    for i, runs in enumerate(_run_threads(work, [(i,) for i in range(N_THREADS)])):
        y, dx, (dw, db) = expected[i]
        for gy, gdx, (gdw, gdb) in runs:
            np.testing.assert_array_equal(gy, y)
            np.testing.assert_array_equal(gdx, dx)
            np.testing.assert_array_equal(gdw, dw)
            np.testing.assert_array_equal(gdb, db)


def test_pooling_and_interpolation_from_threads(rng):
    m = pf.make_mask("uniform", (15, 15), 0.5, seed=1)
    plan = pf.PoolPlan(2, 3, (15, 15), 3, 2, mode="max", input_mask=m)  # shared: no workspace
    xs = [randn(rng, 2, 3, m.count) for _ in range(N_THREADS)]

    def work(x):
        y = plan.forward(x)
        return y, plan.backward(x, np.ones_like(y)), pf.avg_pool2d(pf.interpolate(x, m), 3, 2, 1)

    serial = [work(x) for x in xs]
    for s, p in zip(serial, _run_threads(work, [(x,) for x in xs])):
        for a, b in zip(s, p):
            np.testing.assert_array_equal(a, b)


def test_masks_from_threads():
    args = [(kind, (31, 29), 0.7, seed) for kind in ("uniform", "grid") for seed in (1, 2)]

    def work(kind, size, rate, seed):
        m = pf.make_mask(kind, size, rate, seed)
        return m.indices.copy(), m.nearest.copy()

    serial = [work(*a) for a in args]
    for (si, sn), (pi, pn) in zip(serial, _run_threads(work, args)):
        np.testing.assert_array_equal(si, pi)
        np.testing.assert_array_equal(sn, pn)


def test_last_error_is_thread_local():
    """Two threads fail differently, both before either reads its message: each reads its own."""
    barrier = threading.Barrier(3)
    out = {}

    def fail(name, h, w, rate):
        count = ffi.new("int *")
        status = lib.perf_mask_count_for_rate(h, w, rate, count)
        barrier.wait()  # every thread has made its call
        barrier.wait()  # ... and only now reads
        out[name] = (status, ffi.string(lib.perf_last_error()).decode())

    def succeed():
        count = ffi.new("int *")
        status = lib.perf_mask_count_for_rate(4, 4, 0.5, count)
        barrier.wait()
        barrier.wait()
        out["ok"] = (status, ffi.string(lib.perf_last_error()).decode())

    threads = [threading.Thread(target=fail, args=("bad h", 0, 5, 0.5)),
               threading.Thread(target=fail, args=("bad rate", 5, 5, 2.0)),
               threading.Thread(target=succeed)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["bad h"][0] == lib.PERF_STATUS_INVALID_ARGUMENT
    assert out["bad h"][1] == "perf_mask_count_for_rate: h must be >= 1, got 0"
    assert out["bad rate"][0] == lib.PERF_STATUS_INVALID_ARGUMENT
    assert out["bad rate"][1] == "perf_mask_count_for_rate: rate must be in [0, 1), got 2"
    assert out["ok"] == (lib.PERF_STATUS_SUCCESS, "")  # a fresh thread has no message


def test_exception_messages_from_threads_are_their_own():
    """Python exceptions raised concurrently carry the message of their own C failure."""
    def work(i):
        msgs = []
        for _ in range(50):
            with pytest.raises(ValueError) as e:
                if i % 2:
                    pf.make_mask("uniform", (0, 4 + i), 0.5)
                else:
                    pf.Mask.from_indices((3, 3), [5, 5 - i % 3 - 1])
            msgs.append(str(e.value))
        return msgs

    for i, msgs in enumerate(_run_threads(work, [(i,) for i in range(N_THREADS)])):
        want = "perf_mask_uniform: h must be >= 1" if i % 2 else "indices must be strictly increasing"
        assert all(want in m for m in msgs), (i, set(msgs))


# --- teams smaller than the plan's thread count (issue 29) ---------------------------------------

_SMALL_TEAM_CHILD = r"""
import sys
import numpy as np
import perforated as pf
from perforated import lib

data = dict(np.load(sys.argv[1]))
out = {"max_threads": np.int64(lib.perf_get_num_threads())}
for name in ("big", "grouped", "pointwise"):
    kw = dict(stride=int(data[name + "_stride"]), pad=int(data[name + "_pad"]),
              groups=int(data[name + "_groups"]))
    if name == "grouped":
        kw["mask"] = pf.make_mask("uniform", tuple(data["grouped_mask_size"]), 0.5, seed=7)
    for k, v in zip(("dx", "dw", "db"),
                    pf.conv2d_backward(data[name + "_x"], data[name + "_w"], data[name + "_dy"], **kw)):
        out[name + "_" + k] = v
np.savez(sys.argv[2], **out)
"""

# OpenMP settings under which a parallel region gets fewer threads than omp_get_max_threads(),
# which is what a plan records as the thread count its workspace and partition were made for.
_SMALL_TEAM_ENVS = {
    "limit1": {"OMP_NUM_THREADS": "2", "OMP_THREAD_LIMIT": "1"},
    "limit3of4": {"OMP_NUM_THREADS": "4", "OMP_THREAD_LIMIT": "3"},
    "dynamic": {"OMP_NUM_THREADS": "8", "OMP_DYNAMIC": "true"},
}


def _small_team_cases(rng):
    """The issue's shape (several rounds of chunks), a strided grouped perforated conv with odd sizes,
    and a pointwise conv whose filter gradient is split by columns (40 = a 32-wide and an 8-wide
    share for two threads)."""
    cases = {
        "big": (randn(rng, 16, 16, 20, 20), randn(rng, 72, 16, 3, 3), 1, 1, 1),
        "grouped": (randn(rng, 5, 6, 17, 13), randn(rng, 10, 3, 3, 3), 2, 1, 2),
        "pointwise": (randn(rng, 3, 40, 9, 11), randn(rng, 24, 40, 1, 1), 1, 0, 1),
    }
    data = {}
    for name, (x, w, stride, pad, groups) in cases.items():
        oh, ow = conv_out_size(x.shape[2:], w.shape[2:], stride, pad)
        data.update({name + "_x": x, name + "_w": w, name + "_dy": randn(rng, x.shape[0], w.shape[0], oh, ow),
                     name + "_stride": stride, name + "_pad": pad, name + "_groups": groups})
        if name == "grouped":
            data["grouped_mask_size"] = np.array([oh, ow])
    return data


def _child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    package_parent = str(Path(pf.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, env.get("PYTHONPATH", "")])
    env["PERFORATED_LIBRARY"] = str(pf.LIBRARY_PATH)
    return env


def test_conv_backward_with_a_smaller_openmp_team_than_planned(rng, tmp_path):
    """conv2d_backward planned for T threads but run by a smaller team (OMP_THREAD_LIMIT below
    OMP_NUM_THREADS, OMP_DYNAMIC) gives the float64 reference's gradients (it gave errors of
    hundreds when the partition assumed T threads)."""
    data = _small_team_cases(rng)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **data)
    script = tmp_path / "child.py"
    script.write_text(_SMALL_TEAM_CHILD)
    procs = {}
    for name, extra in _SMALL_TEAM_ENVS.items():
        procs[name] = subprocess.Popen([sys.executable, str(script), str(inputs), str(tmp_path / f"{name}.npz")],
                                       env=dict(_child_env(), **extra), stderr=subprocess.PIPE, text=True)
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: child exited {proc.returncode}\n{err[-4000:]}"
    refs = {}
    for case in ("big", "grouped", "pointwise"):
        kw = dict(stride=int(data[case + "_stride"]), pad=int(data[case + "_pad"]),
                  groups=int(data[case + "_groups"]))
        if case == "grouped":
            mask = pf.make_mask("uniform", tuple(data["grouped_mask_size"]), 0.5, seed=7)
            refs[case] = reference.perforated_conv2d_backward(data[case + "_x"], data[case + "_w"],
                                                              data[case + "_dy"], mask=mask, **kw)
        else:
            refs[case] = reference.conv2d_backward(data[case + "_x"], data[case + "_w"], data[case + "_dy"], **kw)
    for name in _SMALL_TEAM_ENVS:
        with np.load(tmp_path / f"{name}.npz") as got:
            assert int(got["max_threads"]) == int(_SMALL_TEAM_ENVS[name]["OMP_NUM_THREADS"]), name
            for case, ref in refs.items():
                for k, r in zip(("dx", "dw", "db"), ref):
                    assert_close(got[case + "_" + k], r, what=f"{name}: {case} {k}")
