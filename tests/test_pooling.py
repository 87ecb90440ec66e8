"""Pooling (Caffe ceil mode), full and compact input through a mask, forward and backward."""
from __future__ import annotations

import numpy as np
import pytest

import perforated as P
import reference as ref
from helpers import BASE_SEED, assert_close, nan_array, randn
from cases import POOL_GEOMETRIES as GEOMETRIES, POOL_INPUTS as INPUTS, pool_setup as setup

FUNCS = {"max": (P.max_pool2d, P.max_pool2d_backward), "avg": (P.avg_pool2d, P.avg_pool2d_backward)}


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("gid", list(GEOMETRIES))
def test_forward_backward_match_reference(rng, gid, kind, mode):
    x, m, (k, s, p), y_shape = setup(rng, gid, kind)
    fwd, bwd = FUNCS[mode]
    out = nan_array(*y_shape)
    y = fwd(x, k, s, p, input_mask=m, out=out)
    assert y is out
    assert_close(y, ref.perforated_pool2d(x, k, s, p, mode, m), what="forward")
    dy = randn(rng, *y_shape)
    dx = bwd(x, dy, k, s, p, input_mask=m, out=nan_array(*x.shape))
    assert_close(dx, ref.perforated_pool2d_backward(x, dy, k, s, p, mode, m), what="backward")


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("gid", list(GEOMETRIES))
def test_avg_adjoint(rng, gid, kind):
    x, m, (k, s, p), y_shape = setup(rng, gid, kind)
    g = randn(rng, *y_shape)
    y = P.avg_pool2d(x, k, s, p, input_mask=m)
    dx = P.avg_pool2d_backward(x.shape, g, k, s, p, input_mask=m)  # shape-only form
    lhs, rhs = np.vdot(y.astype(np.float64), g), np.vdot(x.astype(np.float64), dx)
    assert abs(lhs - rhs) <= 1e-5 * (np.abs(y).sum() * np.abs(g).max() + 1)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("gid", ["13x17_3s2", "13x17_3s2p1", "7x9_2s2p1_ceil_cut"])
def test_implicit_equals_explicit(rng, gid, mode):
    x_c, m, (k, s, p), y_shape = setup(rng, gid, "uniform")
    fwd, bwd = FUNCS[mode]
    x_full = P.interpolate(x_c, m)
    y_imp = fwd(x_c, k, s, p, input_mask=m)
    np.testing.assert_allclose(y_imp, fwd(x_full, k, s, p), rtol=1e-6, atol=1e-6)
    dy = randn(rng, *y_shape)
    dx_c = bwd(x_c, dy, k, s, p, input_mask=m)
    dx_f = bwd(x_full, dy, k, s, p)
    assert_close(dx_c, P.interpolate_backward(dx_f, m), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("implicit", [False, True])
def test_finite_differences_float32(rng, mode, implicit):
    size = (5, 6)
    m = P.make_mask("uniform", size, 0.5, seed=1) if implicit else None
    count = m.count if implicit else 30
    # well-separated values so a 1e-3 step never changes which element is the maximum
    x = (rng.permutation(2 * count).astype(np.float32) * 0.1).reshape(1, 2, count)
    if not implicit:
        x = x.reshape(1, 2, *size)
    fwd, bwd = FUNCS[mode]
    y = fwd(x, 3, 2, 1, input_mask=m)
    g = randn(rng, *y.shape)
    dx = bwd(x, g, 3, 2, 1, input_mask=m)
    num = np.zeros(x.shape)
    eps = 1e-3
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = np.vdot(fwd(x, 3, 2, 1, input_mask=m).astype(np.float64), g)
        x[i] = old - eps
        fm = np.vdot(fwd(x, 3, 2, 1, input_mask=m).astype(np.float64), g)
        x[i] = old
        num[i] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("implicit", [False, True])
def test_global_avg(rng, implicit):
    size = (7, 6)
    m = P.make_mask("grid", size, 0.5, seed=3) if implicit else None
    x = randn(rng, 2, 3, m.count) if implicit else randn(rng, 2, 3, *size)
    y = P.global_avg_pool2d(x, input_mask=m, out=nan_array(2, 3, 1, 1))
    full = ref.interp(x, m.nearest, size) if implicit else x.astype(np.float64)
    assert_close(y, full.mean(axis=(2, 3))[:, :, None, None])
    dy = randn(rng, 2, 3, 1, 1)
    dx = P.global_avg_pool2d_backward(x, dy, input_mask=m)
    want = np.broadcast_to(dy.astype(np.float64) / 42, (2, 3) + size)
    if implicit:
        want = ref.interp_backward(want, m.nearest, m.count)
    assert_close(dx, want)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("size,kernel,stride", [(5, 1, 3), (3, 1, 2), (9, 2, 4)])
def test_stride_larger_than_kernel_has_no_empty_window(rng, mode, size, kernel, stride):
    """pad 0, stride > kernel: ceil mode would add a last window starting past the map (empty).
    That output must not exist (or at least not be garbage)."""
    x = randn(rng, 1, 2, size, size)
    y = FUNCS[mode][0](x, kernel, stride, 0)
    assert np.isfinite(y).all()
    want = ref.pool2d(x, kernel, stride, 0, mode)
    assert y.shape == want.shape, f"output {y.shape[2:]}, expected {want.shape[2:]} (empty last window)"
    assert_close(y, want)


def test_pool_plan(rng):
    plan = P.PoolPlan(2, 3, (13, 17), 3, 2, 0, "max")
    assert plan.out_size == (6, 8) and plan.x_shape == (2, 3, 13, 17) and plan.y_shape == (2, 3, 6, 8)
    x = randn(rng, 2, 3, 13, 17)
    y = plan.forward(x)
    np.testing.assert_array_equal(y, plan.forward(x, out=nan_array(*plan.y_shape)))
    avg = P.PoolPlan(2, 3, (13, 17), 3, 2, 0, "avg")
    dx = avg.backward(None, randn(rng, 2, 3, 6, 8))  # x may be None for average pooling
    assert dx.shape == x.shape and np.isfinite(dx).all()
    assert "PoolPlan" in repr(plan)


def test_random_sweep():
    print(f"pooling test_random_sweep: PERF_TEST_SEED={BASE_SEED}")
    r = np.random.default_rng(BASE_SEED + 1)
    for case in range(40):
        kh, kw = int(r.integers(1, 5)), int(r.integers(1, 5))
        sh, sw = int(r.integers(1, kh + 1)), int(r.integers(1, kw + 1))  # stride <= kernel
        ph, pw = int(r.integers(0, kh)), int(r.integers(0, kw))
        h, w = int(r.integers(max(1, kh - 2 * ph), 14)), int(r.integers(max(1, kw - 2 * pw), 14))
        mode = str(r.choice(["max", "avg"]))
        m = P.make_mask("uniform", (h, w), float(r.choice([0.0, 0.5, 0.9])), seed=case) \
            if r.random() < 0.5 else None
        n, c = int(r.integers(1, 3)), int(r.integers(1, 4))
        x = randn(r, n, c, m.count) if m is not None else randn(r, n, c, h, w)
        k, s, p = (kh, kw), (sh, sw), (ph, pw)
        msg = f"seed {BASE_SEED} case {case}: {mode} in {(n, c, h, w)} k{k} s{s} p{p} mask {m}"
        fwd, bwd = FUNCS[mode]
        oh, ow = ref.pool_out_size((h, w), k, s, p)
        y = fwd(x, k, s, p, input_mask=m, out=nan_array(n, c, oh, ow))
        assert_close(y, ref.perforated_pool2d(x, k, s, p, mode, m), what=msg)
        dy = randn(r, n, c, oh, ow)
        assert_close(bwd(x, dy, k, s, p, input_mask=m),
                     ref.perforated_pool2d_backward(x, dy, k, s, p, mode, m), what=msg + " backward")


@pytest.mark.parametrize("k, s, p", [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_backward_routes_ties_zeros_and_nans_to_the_first_maximum(rng, k, s, p):
    """Many equal values (integers 0..2), signed zeros and NaNs: the gradient of each window goes to
    its first maximum in row-major order, a NaN counting as the maximum (numpy's argmax rule)."""
    x = rng.integers(0, 3, (2, 3, 9, 11)).astype(np.float32)
    x[0, 0] = np.where(rng.random((9, 11)) < 0.5, -0.0, 0.0)
    x[1, 1].reshape(-1)[rng.choice(99, 7, replace=False)] = np.nan
    y = P.max_pool2d(x, k, s, p)
    dy = randn(rng, *y.shape)
    dx = P.max_pool2d_backward(x, dy, k, s, p, out=nan_array(*x.shape))
    assert_close(dx, ref.pool2d_backward(x, dy, k, s, p, "max"), rtol=1e-6, atol=1e-6,
                 what="max pool backward")  # a misrouted gradient is off by O(1)
