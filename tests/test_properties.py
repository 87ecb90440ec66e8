"""Property-based tests (hypothesis) of the numpy API: every request either matches the float64
reference (tests/reference.py) with the right shape, or raises TypeError / ValueError naming the
problem; never a crash, never a wrong shape. Also: NaN / Inf propagation, and requests whose buffers
cannot be allocated end in MemoryError (or ValueError when the size overflows), not a crash.

Runtime is kept small (the whole module runs in well under a minute on 2 cores): modest
max_examples, tiny shapes, no deadline (a shared CI machine has timing noise). Hypothesis prints the
falsifying example; replay it with the same PERF_TEST_SEED-independent seed it reports
(``@reproduce_failure``), or set HYPOTHESIS_PROFILE=thorough for a longer run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import perforated as pf  # noqa: E402
import reference as ref  # noqa: E402
from helpers import assert_close  # noqa: E402

# the hypothesis profiles ("default": 100 derandomized examples; HYPOTHESIS_PROFILE=thorough: 1000
# random ones) are registered in conftest.py for every property module

#: Number of @given properties in this module (quoted in results/robustness.md).
PROPERTIES = 8


# --- strategies ----------------------------------------------------------------------------------

def _arr(draw, shape, nonfinite=False):
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    if nonfinite and a.size:
        k = draw(st.integers(1, min(3, a.size)))
        flat = a.reshape(-1)
        for _ in range(k):
            flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return a


def _mask_for(draw, shape, allow_none=True):
    """None, a mask from random explicit indices, or a generated mask of the given shape."""
    h, w = shape
    if h < 1 or w < 1:
        return None
    kind = draw(st.sampled_from(["none", "indices", "uniform", "grid"] if allow_none
                                else ["indices", "uniform", "grid"]))
    if kind == "none":
        return None
    if kind == "indices":
        count = draw(st.integers(1, h * w))
        seed = draw(st.integers(0, 2**32 - 1))
        idx = np.sort(np.random.default_rng(seed).choice(h * w, size=count, replace=False))
        return pf.Mask.from_indices((h, w), idx, seed=draw(st.integers(0, 2**64 - 1)))
    rate = draw(st.floats(0.0, 0.95))
    return pf.make_mask(kind, (h, w), rate, seed=draw(st.integers(0, 1000)))


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    # Occasionally break the group rule on purpose.
    if draw(st.integers(0, 9)) == 0:
        cin += 1
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    valid_geom = kh <= h + 2 * ph and kw <= w + 2 * pw and cin % groups == 0
    oh, ow = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1) if valid_geom else (0, 0)
    mask = _mask_for(draw, (oh, ow)) if valid_geom else None
    input_mask = _mask_for(draw, (h, w))
    return dict(n=n, cin=cin, cout=cout, h=h, w=w, k=(kh, kw), s=(sh, sw), p=(ph, pw),
                groups=groups, mask=mask, input_mask=input_mask, valid=valid_geom)


# --- convolution ---------------------------------------------------------------------------------

@given(case=conv_cases(), data=st.data())
def test_conv2d_matches_reference_or_raises(case, data):
    c = case
    x_shape = ((c["n"], c["cin"], c["input_mask"].count) if c["input_mask"] is not None
               else (c["n"], c["cin"], c["h"], c["w"]))
    x = _arr(data.draw, x_shape)
    cin_g = c["cin"] // c["groups"] if c["cin"] % c["groups"] == 0 else max(1, c["cin"] // c["groups"])
    wt = _arr(data.draw, (c["cout"], cin_g) + c["k"])
    b = _arr(data.draw, (c["cout"],))
    compact = c["mask"] is not None and data.draw(st.booleans())
    kwargs = dict(stride=c["s"], pad=c["p"], groups=c["groups"], mask=c["mask"],
                  input_mask=c["input_mask"])
    if not c["valid"]:
        with pytest.raises(ValueError, match=r"kernel|groups|weight"):
            pf.conv2d(x, wt, b, compact=compact, **kwargs)
        return
    y = pf.conv2d(x, wt, b, compact=compact, **kwargs)
    want = ref.perforated_conv2d(x, wt, b, compact=compact, **kwargs)
    assert y.shape == want.shape and y.dtype == np.float32
    assert_close(y, want, what="conv2d")
    # Backward: shapes and values of (dx, dw, db) against the reference.
    dy = _arr(data.draw, y.shape)
    dx, dw, db = pf.conv2d_backward(x, wt, dy, compact=compact, **kwargs)
    rdx, rdw, rdb = ref.perforated_conv2d_backward(x, wt, dy, compact=compact, **kwargs)
    for got, expected, name in ((dx, rdx, "dx"), (dw, rdw, "dw"), (db, rdb, "db")):
        assert got.shape == expected.shape, name
        assert_close(got, expected, rtol=1e-3, atol=1e-3, what=name)


@given(dtype=st.sampled_from([np.float64, np.float16, np.int32, np.int64, np.complex64, np.bool_]),
       which=st.sampled_from(["x", "weight", "bias"]))
def test_conv2d_wrong_dtype_is_a_type_error(dtype, which):
    arrays = {"x": np.ones((1, 2, 5, 5), np.float32), "weight": np.ones((3, 2, 3, 3), np.float32),
              "bias": np.ones(3, np.float32)}
    arrays[which] = arrays[which].astype(dtype)
    with pytest.raises(TypeError, match=rf"{which} must be float32, got {np.dtype(dtype).name}"):
        pf.conv2d(arrays["x"], arrays["weight"], arrays["bias"])


@given(which=st.sampled_from(["x", "weight"]), how=st.sampled_from(["strided", "fortran", "readonly"]))
def test_conv2d_layout_errors(which, how):
    arrays = {"x": np.ones((1, 2, 6, 6), np.float32), "weight": np.ones((2, 2, 3, 3), np.float32)}
    a = arrays[which]
    if how == "strided":
        a = np.ones(a.shape[:-1] + (a.shape[-1] * 2,), np.float32)[..., ::2]
        with pytest.raises(ValueError, match=rf"{which} must be C-contiguous"):
            pf.conv2d(**{**arrays, which: a})
    elif how == "fortran":
        a = np.asfortranarray(a)
        with pytest.raises(ValueError, match=rf"{which} must be C-contiguous"):
            pf.conv2d(**{**arrays, which: a})
    else:  # read-only inputs are fine (never written); a read-only `out` is not
        a.flags.writeable = False
        y = pf.conv2d(**{**arrays, which: a})
        out = np.empty_like(y)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="out must be writable"):
            pf.conv2d(**{**arrays, which: a}, out=out)


# --- pooling -------------------------------------------------------------------------------------

@st.composite
def pool_cases(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    valid = ph < kh and pw < kw and kh <= h + 2 * ph and kw <= w + 2 * pw
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), h=h, w=w, k=(kh, kw),
                s=(sh, sw), p=(ph, pw), mode=draw(st.sampled_from(["max", "avg"])),
                input_mask=_mask_for(draw, (h, w)), valid=valid)


@given(case=pool_cases(), data=st.data())
def test_pooling_matches_reference_or_raises(case, data):
    c = case
    m = c["input_mask"]
    x = _arr(data.draw, (c["n"], c["c"], m.count) if m is not None else (c["n"], c["c"], c["h"], c["w"]))
    fwd = pf.max_pool2d if c["mode"] == "max" else pf.avg_pool2d
    bwd = pf.max_pool2d_backward if c["mode"] == "max" else pf.avg_pool2d_backward
    if not c["valid"]:
        with pytest.raises(ValueError, match=r"pad_|kernel_"):
            fwd(x, c["k"], c["s"], c["p"], input_mask=m)
        return
    y = fwd(x, c["k"], c["s"], c["p"], input_mask=m)
    want = ref.perforated_pool2d(x, c["k"], c["s"], c["p"], c["mode"], input_mask=m)
    assert y.shape == want.shape
    assert_close(y, want, what="pool")
    dy = _arr(data.draw, y.shape)
    dx = bwd(x, dy, c["k"], c["s"], c["p"], input_mask=m)
    if c["mode"] == "avg" or m is None:
        rdx = ref.perforated_pool2d_backward(x, dy, c["k"], c["s"], c["p"], c["mode"], input_mask=m)
        assert dx.shape == rdx.shape
        assert_close(dx, rdx, what="pool backward")
    else:  # compact max: ties between copies of one compact value are routed once; check adjoint
        assert dx.shape == x.shape
        np.testing.assert_allclose(float(np.vdot(dx.astype(np.float64), x)),
                                   float(np.vdot(dy.astype(np.float64), y)), rtol=1e-4, atol=1e-4)


# --- interpolation and masks ---------------------------------------------------------------------

@given(h=st.integers(1, 12), w=st.integers(1, 12), n=st.integers(1, 2), c=st.integers(1, 3),
       data=st.data())
def test_interpolation_matches_reference(h, w, n, c, data):
    m = _mask_for(data.draw, (h, w), allow_none=False)
    comp = _arr(data.draw, (n, c, m.count))
    y = pf.interpolate(comp, m)
    assert y.shape == (n, c, h, w)
    np.testing.assert_array_equal(y, ref.interp(comp, m.nearest, m.shape))
    dy = _arr(data.draw, (n, c, h, w))
    assert_close(pf.interpolate_backward(dy, m), ref.interp_backward(dy, m.nearest, m.count))
    # A compact tensor of the wrong count is a ValueError naming the argument.
    bad = np.ones((n, c, m.count + 1), np.float32)
    with pytest.raises(ValueError, match="compact must have shape"):
        pf.interpolate(bad, m)


@given(h=st.integers(-2, 8), w=st.integers(-2, 8),
       indices=st.lists(st.integers(-3, 70), min_size=0, max_size=12))
def test_mask_from_arbitrary_indices(h, w, indices):
    """Unsorted, duplicated, out-of-range, empty or oversized index lists: a valid mask or a
    ValueError naming the rule."""
    idx = np.array(indices, dtype=np.int64)
    valid = (h >= 1 and w >= 1 and 1 <= len(idx) <= h * w and bool(np.all(idx >= 0))
             and bool(np.all(idx < h * w)) and bool(np.all(np.diff(idx) > 0)))
    if not valid:
        with pytest.raises(ValueError, match=r"perf_mask_create: (h|w|count|indices)"):
            pf.Mask.from_indices((h, w), idx)
        return
    m = pf.Mask.from_indices((h, w), idx)
    assert m.shape == (h, w) and m.count == len(idx)
    np.testing.assert_array_equal(m.indices, idx)
    assert m.nearest.shape == (h * w,)
    np.testing.assert_array_equal(m.nearest[m.indices], np.arange(m.count))
    d = ref.nearest_distances((h, w), m.indices, m.nearest)  # chosen vs minimal distance
    np.testing.assert_array_equal(d[0], d[1])


@given(kind=st.sampled_from(["uniform", "grid", "pooling", "impact"]),
       rate=st.one_of(st.floats(0.0, 0.999), st.sampled_from(
           [float("nan"), float("inf"), -float("inf"), -0.0, -1e-300, 1.0, np.nextafter(1.0, 0.0), 2.0])),
       h=st.integers(1, 10), w=st.integers(1, 10), seed=st.integers(0, 2**64 - 1))
def test_make_mask_odd_rates(kind, rate, h, w, seed):
    extra = {"pool": (2, 2)} if kind == "pooling" else {}
    if kind == "impact":
        extra = {"scores": np.random.default_rng(seed % 2**32).standard_normal((h, w)).astype(np.float32)}
    if not (0.0 <= rate < 1.0):
        with pytest.raises(ValueError, match="rate must be in"):
            pf.make_mask(kind, (h, w), rate, seed, **extra)
        return
    if kind == "pooling" and (h < 2 or w < 2):
        with pytest.raises(ValueError, match="pooling kernel"):
            pf.make_mask(kind, (h, w), rate, seed, **extra)
        return
    m = pf.make_mask(kind, (h, w), rate, seed, **extra)
    want = pf.count_for_rate((h, w), rate)
    assert (1 <= m.count <= want) if kind == "grid" else m.count == want
    assert np.all(np.diff(m.indices) > 0) and m.nearest.min() >= 0 and m.nearest.max() < m.count


# --- NaN / Inf -----------------------------------------------------------------------------------

@given(case=conv_cases(), data=st.data())
def test_nan_inf_propagate_through_conv_and_interp(case, data):
    """Non-finite inputs give exactly the reference's non-finite outputs (NaN where it has NaN,
    the same infinities), the rest stays close; no crash."""
    c = case
    if not c["valid"]:
        return
    x_shape = ((c["n"], c["cin"], c["input_mask"].count) if c["input_mask"] is not None
               else (c["n"], c["cin"], c["h"], c["w"]))
    x = _arr(data.draw, x_shape, nonfinite=True)
    wt = _arr(data.draw, (c["cout"], c["cin"] // c["groups"]) + c["k"])
    kwargs = dict(stride=c["s"], pad=c["p"], groups=c["groups"], mask=c["mask"],
                  input_mask=c["input_mask"])
    with np.errstate(invalid="ignore", over="ignore"):
        y = pf.conv2d(x, wt, **kwargs)
        want = ref.perforated_conv2d(x, wt, **kwargs)
    assert y.shape == want.shape
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(want))
    fin = np.isfinite(want)
    assert_close(y[fin], want[fin], what="finite part")


def test_nan_propagation_avg_pool_and_interp():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 2] = np.nan
    x[0, 0, 3, 0] = np.inf
    y = pf.avg_pool2d(x, 2, 2)
    assert np.isnan(y[0, 0, 0, 1]) and np.isinf(y[0, 0, 1, 0]) and y[0, 0, 0, 0] == 0
    m = pf.Mask.from_indices((2, 2), [1])
    full = pf.interpolate(np.full((1, 1, 1), np.nan, np.float32), m)
    assert np.isnan(full).all()


def test_max_pool_propagates_nan_in_any_window_position():
    """A NaN anywhere in a max-pooling window makes the output NaN (as numpy's max, PyTorch and
    the reference do), whatever its position in the window."""
    for pos in range(4):
        x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
        x.reshape(-1)[pos] = np.nan
        y = pf.max_pool2d(x, 2, 2)
        assert np.isnan(y[0, 0, 0, 0]), f"NaN at window position {pos} was dropped: max = {y.item()}"
        # the same through a mask (the table path): every position computed, compact input
        m = pf.Mask.from_indices((2, 2), np.arange(4))
        yc = pf.max_pool2d(np.ascontiguousarray(x.reshape(1, 1, 4)), 2, 2, input_mask=m)
        assert np.isnan(yc[0, 0, 0, 0]), f"compact input: NaN at {pos} was dropped"
        dx = pf.max_pool2d_backward(x, np.ones((1, 1, 1, 1), np.float32), 2, 2)
        assert dx.reshape(-1)[pos] == 1 and dx.sum() == 1  # the gradient goes to the NaN


# --- out of memory / overflow --------------------------------------------------------------------

_OOM_CHILD = textwrap.dedent("""
    import json, resource, sys
    # Cap the address space so every failing allocation below fails fast, whatever the machine's
    # RAM or overcommit policy (nothing here is ever actually touched).
    limit = 6 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import perforated as pf
    results = {}
    def attempt(name, fn):
        try:
            fn()
            results[name] = "ok"
        except Exception as e:  # the type is what the test checks
            results[name] = type(e).__name__ + ": " + str(e)[:200]
    attempt("make_mask 40000x40000", lambda: pf.make_mask("uniform", (40000, 40000), 0.5))
    attempt("make_mask grid 40000x40000", lambda: pf.make_mask("grid", (40000, 40000), 0.0))
    attempt("Mask.from_indices 40000x40000", lambda: pf.Mask.from_indices((40000, 40000), [0, 7]))
    # 46340^2 positions x 181^2 taps: a 2.8e14-byte gather table (beyond any address space).
    attempt("ConvPlan huge gather table", lambda: pf.ConvPlan(1, 1, (46340, 46340), 1, 181, pad=90))
    # Gigantic batch: x has more elements than size_t can address: refused before any allocation.
    attempt("ConvPlan gigantic batch", lambda: pf.ConvPlan(2**31 - 1, 64, (46340, 46340), 1, 1))
    attempt("PoolPlan gigantic batch", lambda: pf.PoolPlan(2**31 - 1, 2**31 - 1, (46340, 46340), 2, 2))
    print(json.dumps(results))
""")


def test_unallocatable_requests_raise_memory_error_not_crash():
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("RLIMIT_AS cannot be combined with AddressSanitizer's shadow memory")
    env = dict(os.environ)
    pkg_dir = str(Path(pf.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_dir + os.pathsep + env.get("PYTHONPATH", "")
    env["PERFORATED_LIBRARY"] = str(pf.LIBRARY_PATH)
    env["OPENBLAS_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", _OOM_CHILD], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"child crashed (status {proc.returncode}):\n{proc.stderr[-2000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("make_mask 40000x40000", "make_mask grid 40000x40000",
                 "Mask.from_indices 40000x40000", "ConvPlan huge gather table"):
        assert results[name].startswith("MemoryError: perf_"), (name, results[name])
    for name in ("ConvPlan gigantic batch", "PoolPlan gigantic batch"):
        assert results[name].startswith("InvalidArgumentError: perf_") and "overflow" in results[name] \
            or results[name].startswith("MemoryError"), (name, results[name])


def test_overflowing_geometry_is_a_value_error():
    # Padded input beyond 2^31 - 1 and output maps with more than 2^31 - 1 positions.
    with pytest.raises(ValueError, match="exceeds 2\\^31-1|more than 2\\^31-1"):
        pf.ConvPlan(1, 1, (8, 8), 1, 3, stride=1, pad=2**30)
    with pytest.raises(ValueError, match="more than 2\\^31-1 positions"):
        pf.ConvPlan(1, 1, (100, 100), 1, 1, pad=30000)
    with pytest.raises(ValueError, match="h\\*w must be <="):
        pf.make_mask("uniform", (2**16, 2**16), 0.5)
