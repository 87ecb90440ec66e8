"""The channels-last (NHWC) CPU inference path: conv with fused scale / bias / ReLU against a float64
reference on odd shapes, every micro-kernel set (PERF_ISA, in a subprocess), thread-count invariance,
pooling, LRN, interpolation and layout conversion, argument checks, and the Model's engine against its
NCHW layer steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import perforated as P
import reference as R
from perforated.ops import batchnorm as BN
from perforated.ops import layers as L
from perforated.ops.interp import interpolate, interpolate_nhwc
from perforated.ops.layout import to_nchw, to_nhwc
from perforated.graph.model import Model
from perforated.graph.plan import PerforationPlan

# (batch, cin, (h, w), cout, kernel, stride, pad, groups, mask rate or None, input-mask rate or None)
CONV_CASES = [
    (2, 3, (13, 11), 10, 3, 1, 1, 1, None, None),        # tiny cin, cout under one vector
    (1, 5, (9, 9), 37, 5, 2, 2, 1, None, None),          # stride 2, ragged cout
    (3, 16, (7, 8), 70, 1, 1, 0, 1, None, None),         # 1x1, two panels + a ragged one
    (2, 3, (23, 23), 20, 11, 4, 2, 1, None, None),       # AlexNet-like first layer
    (2, 12, (6, 7), 18, 3, 1, 1, 3, None, None),         # groups
    (2, 8, (10, 9), 33, 3, 1, 1, 1, 0.5, None),          # perforated output (compact)
    (2, 8, (10, 9), 24, (3, 1), (1, 2), (1, 0), 2, 0.4, 0.6),  # compact input and output, grouped
    (1, 130, (5, 5), 40, 3, 1, 1, 1, None, None),        # cin crosses a packing block
    (2, 16, (9, 8), 96, 3, 1, 1, 1, None, None),         # two panels of 48 (8 x 48 tiles)
    (2, 8, (7, 7), 64, 3, 2, 1, 1, 0.5, None),           # one panel of 64 (6 x 64 tiles), row runs
    (2, 16, (6, 6), 64, 5, 1, 2, 1, None, None),         # 6-row tiles = output rows: kernel rows skipped
    (1, 64, (7, 7), 200, 3, 1, 1, 1, None, None),        # 49 rows, many panels: panels split between tasks
    # an 11th entry: dilation
    (2, 3, (15, 14), 20, 3, 1, 2, 1, None, None, 2),     # dilated first layer (cin 3: not row runs)
    (2, 24, (12, 11), 40, (3, 2), (1, 2), (2, 3), 2, 0.5, 0.4, (2, 3)),  # dilated, grouped, both masks
]


def _mask(rate, size, seed):
    return None if rate is None else P.make_mask("uniform", size, rate, seed=seed)


def _conv_case(rng, case):
    n, cin, size, cout, k, s, pad, g, rate, in_rate = case[:10]
    dil = case[10] if len(case) > 10 else 1
    in_mask = _mask(in_rate, size, 3)
    probe = P.ConvPlan(n, cin, size, cout, k, s, pad, g, dilation=dil)
    out_size = probe.y_shape[2:]
    plan = P.ConvPlan(n, cin, size, cout, k, s, pad, g, mask=_mask(rate, out_size, 4), input_mask=in_mask,
                      dilation=dil)
    plan.geometry = (s, pad, g)  # for the reference
    plan.dilation = dil
    x = rng.standard_normal(plan.x_shape).astype(np.float32)
    w = rng.standard_normal((cout, cin // g) + R.pair(k)).astype(np.float32)
    return plan, x, w


def _reference(plan, x, w, bias, scale, relu):
    """float64 conv at the computed positions, then scale / bias / ReLU: (N, count, Cout)."""
    y = R.perforated_conv2d(x.astype(np.float64), w.astype(np.float64), None, *plan.geometry, mask=plan.mask,
                            input_mask=plan.input_mask, compact=True, dilation=plan.dilation)
    y = y.reshape(y.shape[0], y.shape[1], -1).transpose(0, 2, 1)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return np.maximum(y, 0) if relu else y


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("epilogue", ["none", "bias", "bias+relu", "scale+bias+relu"])
def test_conv_forward_nhwc_matches_float64_reference(rng, case, epilogue):
    plan, x, w = _conv_case(rng, case)
    cout = w.shape[0]
    bias = rng.standard_normal(cout).astype(np.float32) if "bias" in epilogue else None
    scale = rng.uniform(0.5, 2.0, cout).astype(np.float32) if "scale" in epilogue else None
    relu = "relu" in epilogue
    x_nhwc = to_nhwc(x)
    y = plan.forward_nhwc(x_nhwc, w, bias, scale=scale, relu=relu)
    assert y.shape == plan.y_shape_nhwc
    ref = _reference(plan, x, w, bias, scale, relu)
    assert _rel(y, ref) < 2e-6, plan.kernels
    if relu:
        assert (y >= 0).all()


def test_conv_forward_nhwc_agrees_with_nchw_forward(rng):
    plan, x, w = _conv_case(rng, CONV_CASES[5])
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    nchw = plan.forward(x, w, b)
    nhwc = plan.forward_nhwc(to_nhwc(x), w, b)
    np.testing.assert_allclose(to_nchw(nhwc).reshape(nchw.shape), nchw, rtol=1e-4, atol=1e-4)


def test_conv_forward_nhwc_same_bits_for_any_thread_count(rng):
    """Each output is summed in the same order whatever the number of threads."""
    plan, x, w = _conv_case(rng, (4, 24, (15, 14), 50, 3, 1, 1, 1, None, None))
    xn = to_nhwc(x)
    b = rng.standard_normal(50).astype(np.float32)
    before = P.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            P.set_num_threads(t)
            outs.append(P.ConvPlan(4, 24, (15, 14), 50, 3, 1, 1).forward_nhwc(xn, w, b, relu=True))
    finally:
        P.set_num_threads(before)
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


_ISA_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import test_nhwc as T
    rng = np.random.default_rng(7)
    errs, kernels = [], set()
    for case in T.CONV_CASES:
        plan, x, w = T._conv_case(rng, case)
        b = rng.standard_normal(w.shape[0]).astype(np.float32)
        y = plan.forward_nhwc(T.to_nhwc(x), w, b, relu=True)
        errs.append(T._rel(y, T._reference(plan, x, w, b, None, True)))
        res = rng.standard_normal(plan.y_shape_nhwc).astype(np.float32)  # the residual epilogue too
        y = plan.forward_nhwc(T.to_nhwc(x), w, b, relu=True, residual=res)
        errs.append(T._rel(y, np.maximum(T._reference(plan, x, w, b, None, False) + res, 0)))
        kernels.add(plan.kernels)
    print(json.dumps({"errs": errs, "kernels": sorted(kernels)}))
""")


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_kernel_set_matches_reference(isa):
    """PERF_ISA selects a weaker kernel set (read once per process, so each runs in a subprocess)."""
    if isa != "generic" and not _cpu_has({"avx2": "fma", "avx512": "avx512f"}[isa]):
        pytest.skip(f"this CPU lacks {isa}")
    env = dict(os.environ, PERF_ISA=isa)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, tests_dir], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tests_dir)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kernels"] == [isa]
    assert max(out["errs"]) < 2e-6, out


def test_conv_forward_nhwc_checks_arguments(rng):
    plan, x, w = _conv_case(rng, CONV_CASES[0])
    xn = to_nhwc(x)
    with pytest.raises(ValueError, match=r"ConvPlan.forward_nhwc.*x"):
        plan.forward_nhwc(x, w)  # NCHW given
    with pytest.raises(ValueError, match=r"ConvPlan.forward_nhwc.*bias"):
        plan.forward_nhwc(xn, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"ConvPlan.forward_nhwc.*scale"):
        plan.forward_nhwc(xn, w, None, scale=np.zeros(11, np.float32))
    with pytest.raises(ValueError, match=r"ConvPlan.forward_nhwc.*weight"):
        plan.forward_nhwc(xn, w[:, :, :2])
    with pytest.raises(ValueError, match=r"ConvPlan.forward_nhwc.*out"):
        plan.forward_nhwc(xn, w, out=np.empty((1, 2, 3), np.float32))
    with pytest.raises(TypeError):
        plan.forward_nhwc(xn.astype(np.float64), w)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("geometry", [((9, 10), 3, 2, 0), ((8, 8), 3, 2, 1), ((7, 5), (2, 3), (2, 1), (1, 1))])
@pytest.mark.parametrize("masked", [False, True])
def test_pool_forward_nhwc_matches_nchw(rng, mode, geometry, masked):
    size, k, s, pad = geometry
    in_mask = P.make_mask("grid", size, 0.5, seed=2) if masked else None
    plan = P.PoolPlan(3, 21, size, k, s, pad, mode=mode, input_mask=in_mask)
    x = rng.standard_normal(plan.x_shape).astype(np.float32)
    y = plan.forward_nhwc(to_nhwc(x))
    assert y.shape == plan.y_shape_nhwc
    np.testing.assert_allclose(to_nchw(y).reshape(plan.y_shape), plan.forward(x), rtol=1e-6, atol=1e-6)


def test_pool_forward_nhwc_checks_x(rng):
    plan = P.PoolPlan(2, 4, (6, 6), 2, 2)
    with pytest.raises(ValueError, match=r"PoolPlan.forward_nhwc.*x"):
        plan.forward_nhwc(np.zeros((2, 4, 36), np.float32))


@pytest.mark.parametrize("channels,size", [(7, 5), (96, 5), (33, 3)])
def test_lrn_nhwc_matches_reference(rng, channels, size):
    x = rng.standard_normal((2, channels, 4, 3)).astype(np.float32)
    y = L.lrn_nhwc(to_nhwc(x), size, 1e-2, 0.75, 2.0)
    ref = R.lrn(x.astype(np.float64), size, 1e-2, 0.75, 2.0)
    np.testing.assert_allclose(to_nchw(y).reshape(x.shape), ref, rtol=1e-5, atol=1e-6)
    xn = to_nhwc(x)
    with pytest.raises(ValueError, match="lrn_nhwc: out must not overlap x"):
        L.lrn_nhwc(xn, out=xn)


def test_interpolate_nhwc_matches_nchw(rng):
    mask = P.make_mask("uniform", (7, 9), 0.4, seed=5)
    compact = rng.standard_normal((2, 13, mask.count)).astype(np.float32)
    full = interpolate(compact, mask)
    y = interpolate_nhwc(np.ascontiguousarray(compact.transpose(0, 2, 1)), mask)
    np.testing.assert_array_equal(to_nchw(y).reshape(full.shape), full)
    with pytest.raises(ValueError, match="interpolate_nhwc.*compact"):
        interpolate_nhwc(np.zeros((2, mask.count + 1, 13), np.float32), mask)


def test_interpolate_nhwc_large_output_streams_the_same_values(rng):
    """A full output of 64 MiB or more takes the non-temporal store path."""
    mask = P.make_mask("uniform", (256, 256), 0.5, seed=6)
    compact = rng.standard_normal((1, mask.count, 256)).astype(np.float32)
    full = interpolate_nhwc(compact, mask)
    assert full.nbytes >= 64 << 20
    np.testing.assert_array_equal(full, compact[:, np.asarray(mask.nearest).reshape(-1), :])


def test_layout_round_trip_and_checks(rng):
    x = rng.standard_normal((3, 5, 4, 7)).astype(np.float32)
    xn = to_nhwc(x)
    np.testing.assert_array_equal(xn, x.reshape(3, 5, 28).transpose(0, 2, 1))
    np.testing.assert_array_equal(to_nchw(xn).reshape(x.shape), x)
    with pytest.raises(ValueError, match="to_nhwc: out must not overlap x"):
        to_nhwc(x, out=x.reshape(3, 28, 5))
    with pytest.raises(ValueError, match="to_nhwc.*x"):
        to_nhwc(x[0, 0])


def _engine_pair(network, batch, **kw):
    return Model(network, batch, inference="nhwc", **kw), Model(network, batch, inference="layers", **kw)


@pytest.mark.parametrize("network,batch,plan", [
    ("nin", 3, None),
    ("nin", 2, ("uniform", 0.5)),
    ("nin", 2, ("grid", 0.66)),
    ("alexnet", 1, ("uniform", 0.5)),
])
def test_engine_matches_layer_steps(rng, network, batch, plan):
    perf = PerforationPlan.uniform_rate(network, plan[1], kind=plan[0], seed=1) if plan else None
    nhwc, layers = _engine_pair(network, batch, plan=perf, seed=2)
    x = rng.standard_normal(nhwc.x.shape).astype(np.float32)
    a, b = nhwc.forward(x).copy(), layers.forward(x).copy()
    assert _rel(a, b.astype(np.float64)) < 1e-5
    assert not np.shares_memory(a, b)


def test_engine_fuses_batchnorm_and_backward_reruns_the_steps(rng):
    nhwc, layers = _engine_pair("nin", 2, batchnorm=True, seed=3)
    for m in (nhwc, layers):  # non-trivial running statistics
        for step in m.steps:
            if step.kind == "batchnorm":
                step.running["mean"][:] = np.linspace(-0.2, 0.3, step.running["mean"].size)
                step.running["var"][:] = np.linspace(0.5, 2.0, step.running["var"].size)
    x = rng.standard_normal(nhwc.x.shape).astype(np.float32)
    assert _rel(nhwc.forward(x), layers.forward(x).astype(np.float64)) < 1e-5
    assert any("+bn" in op.name for op in nhwc.engine.ops)
    labels = np.array([3, 8])
    for m in (nhwc, layers):
        m.loss(labels)
        m.backward(labels)
    for name in ("conv1", "cccp6"):
        np.testing.assert_allclose(nhwc.params.grads[name]["weight"], layers.params.grads[name]["weight"],
                                   rtol=1e-4, atol=1e-6)


def test_batchnorm_affine_folds_into_scale_and_shift(rng):
    g, b = rng.uniform(0.5, 2, 6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    mean, var = rng.standard_normal(6).astype(np.float32), rng.uniform(0.1, 3, 6).astype(np.float32)
    conv_bias = rng.standard_normal(6).astype(np.float32)
    scale, shift = BN.affine(g, b, mean, var, conv_bias)
    z = rng.standard_normal((4, 6)).astype(np.float32)
    expect = (z + conv_bias - mean) / np.sqrt(var + BN.EPS) * g + b
    np.testing.assert_allclose(z * scale + shift, expect, rtol=1e-5, atol=1e-5)


def test_engine_profile_names_every_op():
    model = Model("nin", 2, seed=1)
    rows = model.profile()
    names = [r["layer"] for r in rows]
    assert names[0] == "input" and "conv1+relu" in names and "pool3" in names
    assert sum(r["macs"] for r in rows) > 0 and all(r["seconds"] >= 0 for r in rows)


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_conv_forward_nhwc_with_weights_packed_once_gives_the_same_bits(rng, case):
    plan, x, w = _conv_case(rng, case)
    xn = to_nhwc(x)
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    packed = plan.pack_nhwc(w)
    np.testing.assert_array_equal(plan.forward_nhwc(xn, packed, b, relu=True), plan.forward_nhwc(xn, w, b, relu=True))
    np.testing.assert_array_equal(plan.forward_nhwc(xn, packed, b, relu=True), plan.forward_nhwc(xn, w, b, relu=True))


def test_packed_weights_of_another_geometry_are_refused(rng):
    a = P.ConvPlan(1, 8, (6, 6), 16, 3, 1, 1)
    b = P.ConvPlan(1, 16, (6, 6), 8, 3, 1, 1)  # the same number of weights, packed differently
    packed = a.pack_nhwc(rng.standard_normal(a.weight_shape).astype(np.float32))
    with pytest.raises(P.InvalidArgumentError, match="not made by perf_conv_nhwc_pack for a plan of this geometry"):
        b.forward_nhwc(np.zeros(b.x_shape_nhwc, np.float32), packed)
    with pytest.raises(ValueError, match="weight"):
        a.pack_nhwc(np.zeros((16, 8, 3, 2), np.float32))


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_conv_forward_nhwc_adds_a_residual_before_the_relu(rng, case):
    plan, x, w = _conv_case(rng, case)
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    res = rng.standard_normal(plan.y_shape_nhwc).astype(np.float32)
    y = plan.forward_nhwc(to_nhwc(x), w, b, relu=True, residual=res)
    want = np.maximum(_reference(plan, x, w, b, None, False) + res, 0)
    assert _rel(y, want) < 1e-5


def test_residual_must_not_overlap_the_output(rng):
    plan = P.ConvPlan(1, 4, (5, 5), 8, 3, 1, 1)
    w = rng.standard_normal(plan.weight_shape).astype(np.float32)
    y = np.zeros(plan.y_shape_nhwc, np.float32)
    with pytest.raises(ValueError, match="residual must not overlap out"):
        plan.forward_nhwc(np.zeros(plan.x_shape_nhwc, np.float32), w, residual=y, out=y)
    with pytest.raises(ValueError, match="residual"):
        plan.forward_nhwc(np.zeros(plan.x_shape_nhwc, np.float32), w, residual=np.zeros((1, 25, 7), np.float32))
