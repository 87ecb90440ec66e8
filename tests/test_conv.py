"""Convolution: dense, perforated (explicit and compact output), implicit input, forward and backward,
against the float64 reference; adjoint identities; implicit == explicit; a seeded random sweep."""
from __future__ import annotations

import numpy as np
import pytest

import perforated as P
import reference as ref
from helpers import BASE_SEED, assert_close, nan_array, randn
from cases import CONV_GEOMETRIES as GEOMETRIES, OUT_MASKS, conv_setup as setup

@pytest.mark.parametrize("implicit", [False, True], ids=["full_in", "compact_in"])
@pytest.mark.parametrize("mask_kind", OUT_MASKS)
@pytest.mark.parametrize("gid", list(GEOMETRIES))
def test_forward_matches_reference(rng, gid, mask_kind, implicit):
    x, weight, b, kw, (oh, ow) = setup(rng, GEOMETRIES[gid], mask_kind, implicit)
    n, co = x.shape[0], weight.shape[0]
    out = nan_array(n, co, oh, ow)
    y = P.conv2d(x, weight, b, out=out, **kw)
    assert y is out
    assert_close(y, ref.perforated_conv2d(x, weight, b, **kw), what="full output")
    if kw["mask"] is not None:
        out_c = nan_array(n, co, kw["mask"].count)
        y_c = P.conv2d(x, weight, b, compact=True, out=out_c, **kw)
        assert y_c is out_c
        assert_close(y_c, ref.perforated_conv2d(x, weight, b, compact=True, **kw), what="compact")


@pytest.mark.parametrize("implicit", [False, True], ids=["full_in", "compact_in"])
@pytest.mark.parametrize("mask_kind", OUT_MASKS)
@pytest.mark.parametrize("gid", list(GEOMETRIES))
def test_backward_matches_reference(rng, gid, mask_kind, implicit):
    x, weight, _, kw, (oh, ow) = setup(rng, GEOMETRIES[gid], mask_kind, implicit, bias=False)
    n, co = x.shape[0], weight.shape[0]
    dy = randn(rng, n, co, oh, ow)
    dx, dw, db = P.conv2d_backward(x, weight, dy, **kw)
    rdx, rdw, rdb = ref.perforated_conv2d_backward(x, weight, dy, **kw)
    assert dx.shape == x.shape
    assert_close(dx, rdx, what="dx")
    assert_close(dw, rdw, what="dweight")
    assert_close(db, rdb, what="dbias")
    if kw["mask"] is not None:
        dy_c = randn(rng, n, co, kw["mask"].count)
        got = P.conv2d_backward(x, weight, dy_c, compact=True, **kw)
        want = ref.perforated_conv2d_backward(x, weight, dy_c, compact=True, **kw)
        for g, r, name in zip(got, want, ("dx", "dweight", "dbias")):
            assert_close(g, r, what=f"compact {name}")


def _plan(x, weight, kw):
    in_mask = kw["input_mask"]
    in_size = in_mask.shape if in_mask is not None else x.shape[2:]
    return P.ConvPlan(x.shape[0], x.shape[1], in_size, weight.shape[0], weight.shape[2:],
                      kw["stride"], kw["pad"], kw["groups"], kw["mask"], in_mask, dilation=kw.get("dilation", 1))


@pytest.mark.parametrize("implicit", [False, True], ids=["full_in", "compact_in"])
@pytest.mark.parametrize("mask_kind", ["dense", "uniform", "grid"])
@pytest.mark.parametrize("gid", list(GEOMETRIES))
def test_adjoint_identities(rng, gid, mask_kind, implicit):
    """<conv(x, w), g> == <x, backward_data(w, g)> == <w, backward_filter(x, g)> (conv is bilinear)."""
    x, weight, _, kw, _ = setup(rng, GEOMETRIES[gid], mask_kind, implicit, bias=False)
    plan = _plan(x, weight, kw)
    y = plan.forward(x, weight, out=nan_array(*plan.y_shape))
    g = randn(rng, *plan.y_shape)
    dx = plan.backward_data(weight, g, out=nan_array(*plan.x_shape))
    dw, db = plan.backward_filter(x, g, dweight=nan_array(*plan.weight_shape),
                                  dbias=nan_array(weight.shape[0]))
    lhs = np.vdot(y.astype(np.float64), g)
    scale = np.abs(y).sum() * np.abs(g).max() + 1.0
    assert abs(lhs - np.vdot(x.astype(np.float64), dx)) <= 1e-5 * scale
    assert abs(lhs - np.vdot(weight.astype(np.float64), dw)) <= 1e-5 * scale
    assert_close(db, g.astype(np.float64).sum(axis=tuple(i for i in range(g.ndim) if i != 1)))


@pytest.mark.parametrize("mask_kind", ["dense", "uniform", "count1"])
@pytest.mark.parametrize("gid", ["13x17_23to19_3x3p1", "groups2_5x5p2", "nonsquare_stride_pad",
                                 "dilated_rect_stride_groups"])
def test_implicit_equals_explicit(rng, gid, mask_kind):
    """Reading a compact input through its mask == convolving the interpolated full input."""
    x_c, weight, b, kw, (oh, ow) = setup(rng, GEOMETRIES[gid], mask_kind, implicit=True)
    in_mask = kw.pop("input_mask")
    x_full = P.interpolate(x_c, in_mask)
    y_imp = P.conv2d(x_c, weight, b, input_mask=in_mask, **kw)
    y_exp = P.conv2d(x_full, weight, b, **kw)
    assert_close(y_imp, y_exp, rtol=1e-5, atol=1e-5)
    dy = randn(rng, *y_imp.shape)
    dx_c, dw_i, db_i = P.conv2d_backward(x_c, weight, dy, input_mask=in_mask, **kw)
    dx_f, dw_e, db_e = P.conv2d_backward(x_full, weight, dy, **kw)
    assert_close(dx_c, P.interpolate_backward(dx_f, in_mask), rtol=1e-5, atol=1e-5)
    assert_close(dw_i, dw_e, rtol=1e-5, atol=1e-5)
    assert_close(db_i, db_e, rtol=1e-5, atol=1e-5)


def test_perforated_output_is_dense_output_at_mask(rng):
    """Values at the computed positions equal the dense conv; the rest copy their nearest."""
    x, weight, b, kw, (oh, ow) = setup(rng, GEOMETRIES["13x17_23to19_3x3p1"], "uniform", False)
    mask = kw.pop("mask")
    dense = P.conv2d(x, weight, b, **kw).reshape(x.shape[0], weight.shape[0], -1)
    y_c = P.conv2d(x, weight, b, mask=mask, compact=True, **kw)
    assert_close(y_c, dense[:, :, mask.indices], rtol=1e-5, atol=1e-5)  # atol scaled by max |y|
    y = P.conv2d(x, weight, b, mask=mask, **kw).reshape(dense.shape)
    np.testing.assert_array_equal(y, y_c[:, :, mask.nearest])


@pytest.mark.parametrize("mask_kind", ["dense", "uniform"])
@pytest.mark.parametrize("implicit", [False, True], ids=["full_in", "compact_in"])
def test_finite_differences_float32(rng, mask_kind, implicit):
    """Numeric gradient of sum(conv2d(x) * g) with the float32 forward (eps 1e-2), tiny shape."""
    geom = (1, 2, (5, 6), 2, (3, 3), (2, 1), 1, 1)
    x, weight, b, kw, (oh, ow) = setup(rng, geom, mask_kind, implicit)
    g = randn(rng, 1, 2, oh, ow)

    def loss():
        return float(np.vdot(P.conv2d(x, weight, b, **kw).astype(np.float64), g))

    dx, dw, db = P.conv2d_backward(x, weight, g, **kw)
    for arr, grad, name in ((x, dx, "dx"), (weight, dw, "dweight"), (b, db, "dbias")):
        num = np.zeros(arr.shape)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + 1e-2
            fp = loss()
            arr[i] = old - 1e-2
            fm = loss()
            arr[i] = old
            num[i] = (fp - fm) / 2e-2
        np.testing.assert_allclose(grad, num, rtol=1e-2, atol=1e-2, err_msg=name)


def test_plan_reuse_and_properties(rng):
    mask = P.make_mask("uniform", (13, 17), 0.5, seed=2)
    plan = P.ConvPlan(2, 4, (13, 17), 6, 3, stride=1, pad=1, mask=mask)
    assert plan.out_size == (13, 17) and plan.count == mask.count
    assert plan.x_shape == (2, 4, 13, 17) and plan.y_shape == (2, 6, mask.count)
    assert plan.weight_shape == (6, 4, 3, 3)
    # the im2row path gathers the computed positions' receptive fields: at least count x (4*3*3) floats
    assert plan.path == "im2row" and plan.workspace_bytes >= mask.count * 36 * 4
    assert "ConvPlan" in repr(plan)
    x, w = randn(rng, 2, 4, 13, 17), randn(rng, 6, 4, 3, 3)
    y1 = plan.forward(x, w)
    y2 = plan.forward(x, w, out=nan_array(*plan.y_shape))
    np.testing.assert_array_equal(y1, y2)
    del mask  # the plan copies what it needs
    np.testing.assert_array_equal(plan.forward(x, w), y1)


def _random_case(r: np.random.Generator):
    groups = int(r.choice([1, 1, 2, 3]))
    c = groups * int(r.integers(1, 5))
    co = groups * int(r.integers(1, 5))
    kh, kw = int(r.integers(1, 6)), int(r.integers(1, 6))
    sh, sw = int(r.integers(1, 4)), int(r.integers(1, 4))
    ph, pw = int(r.integers(0, 3)), int(r.integers(0, 3))
    h = int(r.integers(max(1, kh - 2 * ph), 16))
    w = int(r.integers(max(1, kw - 2 * pw), 16))
    n = int(r.integers(1, 4))
    return (n, c, (h, w), co, (kh, kw), (sh, sw), (ph, pw), groups)


def test_random_sweep():
    seed = BASE_SEED
    print(f"test_random_sweep: PERF_TEST_SEED={seed}")
    r = np.random.default_rng(seed)
    for case in range(40):
        geom = _random_case(r)
        n, c, (h, w), co, k, stride, pad, groups = geom
        oh, ow = ref.conv_out_size((h, w), k, stride, pad)
        rate = float(r.choice([0.0, 0.3, 0.5, 0.8, 0.95]))
        kind = str(r.choice(["dense", "uniform", "grid", "impact"]))
        mask = None
        if kind == "impact":
            mask = P.make_mask("impact", (oh, ow), rate, seed=case,
                               scores=r.standard_normal((oh, ow)).astype(np.float32))
        elif kind != "dense":
            mask = P.make_mask(kind, (oh, ow), rate, seed=case)
        in_mask = P.make_mask("uniform", (h, w), float(r.choice([0.2, 0.6, 0.99])), seed=case) \
            if r.random() < 0.4 else None
        x = randn(r, n, c, in_mask.count) if in_mask is not None else randn(r, n, c, h, w)
        wt, b = randn(r, co, c // groups, *k), randn(r, co)
        kw = dict(stride=stride, pad=pad, groups=groups, mask=mask, input_mask=in_mask)
        msg = f"seed {seed} case {case}: geometry {geom}, mask {kind} r={rate}, input_mask {in_mask}"
        y = P.conv2d(x, wt, b, out=nan_array(n, co, oh, ow), **kw)
        assert_close(y, ref.perforated_conv2d(x, wt, b, **kw), what=msg)
        dy = randn(r, n, co, oh, ow)
        got = P.conv2d_backward(x, wt, dy, **kw)
        want = ref.perforated_conv2d_backward(x, wt, dy, **kw)
        for g_, w_, name in zip(got, want, ("dx", "dweight", "dbias")):
            assert_close(g_, w_, what=f"{msg} ({name})")


@pytest.mark.parametrize("mode", ["dense", "perforated", "implicit"])
def test_chunking_and_thread_counts(rng, mode):
    """Enough rows (batch * count) for several GEMM chunks that straddle image boundaries; the result
    does not depend on the thread count."""
    geom = (8, 3, (24, 24), 4, (3, 3), 1, 1, 1)
    x, weight, b, kw, (oh, ow) = setup(rng, geom, "dense" if mode == "dense" else "uniform",
                                       implicit=(mode == "implicit"))
    dy = randn(rng, 8, 4, oh, ow)
    want_y = ref.perforated_conv2d(x, weight, b, **kw)
    want_g = ref.perforated_conv2d_backward(x, weight, dy, **kw)
    threads = P.get_num_threads()
    results = []
    try:
        for t in sorted({1, 2, threads}):
            P.set_num_threads(t)
            y = P.conv2d(x, weight, b, out=nan_array(8, 4, oh, ow), **kw)
            grads = P.conv2d_backward(x, weight, dy, **kw)
            assert_close(y, want_y, what=f"threads {t}")
            for g_, w_, name in zip(grads, want_g, ("dx", "dweight", "dbias")):
                assert_close(g_, w_, what=f"threads {t} {name}")
            results.append((y, grads))
    finally:
        P.set_num_threads(threads)
    for y, grads in results[1:]:
        assert_close(y, results[0][0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mask_kind", ["dense", "uniform", "grid"])
def test_nin_conv1_sized(rng, mask_kind):
    """NIN conv1 geometry (3 -> 192, 5x5 pad 2 on 32x32), batch 4, against the reference."""
    x, weight, b, kw, (oh, ow) = setup(rng, (4, 3, (32, 32), 192, (5, 5), 1, 2, 1), mask_kind, False)
    y = P.conv2d(x, weight, b, out=nan_array(4, 192, oh, ow), **kw)
    assert_close(y, ref.perforated_conv2d(x, weight, b, **kw))
    dy = randn(rng, 4, 192, oh, ow)
    for g_, w_ in zip(P.conv2d_backward(x, weight, dy, **kw),
                      ref.perforated_conv2d_backward(x, weight, dy, **kw)):
        assert_close(g_, w_)


def test_bias_none_and_need_bias(rng):
    x, weight, b, kw, _ = setup(rng, GEOMETRIES["groups2_5x5p2"], "uniform", False)
    zero = np.zeros_like(b)
    np.testing.assert_array_equal(P.conv2d(x, weight, None, **kw), P.conv2d(x, weight, zero, **kw))
    plan = _plan(x, weight, kw)
    dy = randn(rng, *plan.y_shape)
    dw, db = plan.backward_filter(x, dy, need_bias=False)
    assert db is None
    dw2, db2 = plan.backward_filter(x, dy)
    np.testing.assert_array_equal(dw, dw2)
    assert_close(db2, dy.astype(np.float64).sum(axis=(0, 2)))


# stride 1 and no masks: the geometries the shifted-GEMM forward takes (1-D kernels, thin k x k,
# groups, padding wider than the kernel, kernel as large as the input)
SHIFT_GEOMETRIES = {
    "3x1_pad1": (3, 8, (9, 11), 5, (3, 1), 1, (1, 0), 1),
    "1x5_pad2": (2, 6, (7, 13), 9, (1, 5), 1, (0, 2), 1),
    "thin_3x3_groups2": (2, 64, (6, 17), 8, (3, 3), 1, 1, 2),
    "big_pad_3x2": (2, 4, (4, 5), 3, (3, 2), 1, (3, 2), 1),
    "kernel_eq_input": (1, 2, (5, 5), 3, (5, 5), 1, 0, 1),
}


@pytest.mark.parametrize("gid", list(SHIFT_GEOMETRIES))
def test_shift_path_matches_reference(rng, gid, monkeypatch):
    """The shifted-GEMM forward (forced) equals the reference; backward (im2row) on the same plan too."""
    monkeypatch.setenv("PERF_CONV_PATH", "shift")
    n, c, (h, w), co, k, stride, pad, groups = SHIFT_GEOMETRIES[gid]
    x, weight, b, kw, (oh, ow) = setup(rng, SHIFT_GEOMETRIES[gid], "dense", False)
    plan = P.ConvPlan(n, c, (h, w), co, k, stride, pad, groups)
    assert plan.path == "shift"
    y = plan.forward(x, weight, b, out=nan_array(n, co, oh, ow))
    assert_close(y, ref.perforated_conv2d(x, weight, b, **kw), what=gid)
    dy = randn(rng, n, co, oh, ow)
    want = ref.perforated_conv2d_backward(x, weight, dy, **kw)
    assert_close(plan.backward_data(weight, dy), want[0], what=f"{gid} dx")
    assert_close(plan.backward_filter(x, dy)[0], want[1], what=f"{gid} dweight")


def test_plan_picks_shift_for_line_and_thin_kernels(monkeypatch):
    monkeypatch.delenv("PERF_CONV_PATH", raising=False)
    t = P.get_num_threads()
    assert P.ConvPlan(t, 8, (9, 11), 5, (3, 1), pad=(1, 0)).path == "shift"
    assert P.ConvPlan(t, 64, (16, 16), 16, 3, pad=1).path == "shift"       # thin: 16 filters from 64
    assert P.ConvPlan(t, 64, (16, 16), 64, 3, pad=1).path == "im2row"      # dense layer
    assert P.ConvPlan(t, 8, (9, 11), 5, (3, 1), stride=2).path == "im2row"
    assert P.ConvPlan(t, 8, (9, 11), 5, (3, 1), mask=P.make_mask("grid", (7, 11), 0.5)).path == "im2row"
    assert P.ConvPlan(t, 8, (9, 11), 5, 1).path == "pointwise"
    # a padded copy of this input would be 64 x 1502 x 1500 floats per thread: over the bound, im2row
    assert P.ConvPlan(t, 64, (1500, 1500), 8, (3, 1), pad=(1, 0)).path == "im2row"
    monkeypatch.setenv("PERF_CONV_PATH", "im2row")
    assert P.ConvPlan(t, 8, (9, 11), 5, (3, 1), pad=(1, 0)).path == "im2row"


def test_dilation_arguments_are_checked(rng):
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        P.ConvPlan(1, 2, (9, 9), 3, 3, dilation=0)
    with pytest.raises(ValueError, match=r"dilation 5x5: span 11x11\) exceeds padded input 9x9"):
        P.ConvPlan(1, 2, (9, 9), 3, 3, dilation=5)
    plan = P.ConvPlan(1, 2, (9, 9), 3, 3, pad=1, dilation=(2, 3))
    assert plan.out_size == (7, 5) and "dilation=(2, 3)" in repr(plan)
    assert plan.path == "im2row"  # the shifted-GEMM path is for dilation 1 only
