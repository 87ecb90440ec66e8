"""Hypothesis-generated small ONNX graphs (issue 30, bad input and coverage): convolutions of every form
(strides, asymmetric pads, dilation, groups), pooling in floor and ceil mode, batch norm, clip,
residual adds and concats, a fully connected head; ours (channels-last and NCHW) against ONNX Runtime,
dense, and perforated against ONNX Runtime running our exported graph. The examples follow the hypothesis
profile of conftest.py (HYPOTHESIS_PROFILE=thorough for 1000 random ones)."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import perforated.onnx as pon  # noqa: E402

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("ONNX Runtime is not run under AddressSanitizer", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")

def _out(size, k, s, p0, p1, d=1, ceil=0):
    span = size + p0 + p1 - ((k - 1) * d + 1)
    if span < 0:
        return 0
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p0:
        out -= 1
    return out


@st.composite
def graphs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31)))
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(3, 10)), draw(st.integers(3, 10))
    x_shape = [n, c, h, w]
    nodes, inits, cur, k = [], [], "x", 0

    def name(prefix):
        nonlocal k
        k += 1
        return f"{prefix}{k}"

    def const(prefix, value):
        nm = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), nm))
        return nm

    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["conv", "conv", "pool", "bn", "clip", "scale", "add", "concat"]))
        if op == "conv":
            groups = [g for g in (1, 2, 3) if c % g == 0]
            g = draw(st.sampled_from(groups))
            cout = g * draw(st.integers(1, 3))
            kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
            dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
            pads = [draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
                    draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))]
            oh, ow = _out(h, kh, sh, pads[0], pads[2], dh), _out(w, kw, sw, pads[1], pads[3], dw)
            assume(oh >= 1 and ow >= 1)
            wt = const("W", rng.standard_normal((cout, c // g, kh, kw)) / np.sqrt(c // g * kh * kw))
            ins = [cur, wt] + ([const("B", rng.standard_normal(cout))] if draw(st.booleans()) else [])
            out = name("conv")
            nodes.append(helper.make_node("Conv", ins, [out], name=out, kernel_shape=[kh, kw], strides=[sh, sw],
                                          pads=pads, dilations=[dh, dw], group=g))
            if draw(st.booleans()):
                nodes.append(helper.make_node("Relu", [out], [out + "_r"]))
                out += "_r"
            cur, c, h, w = out, cout, oh, ow
        elif op == "pool":
            mode = draw(st.sampled_from(["MaxPool", "AveragePool"]))
            kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            pads = [draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)),
                    draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))]
            ceil = draw(st.integers(0, 1))
            oh, ow = _out(h, kh, sh, pads[0], pads[2], 1, ceil), _out(w, kw, sw, pads[1], pads[3], 1, ceil)
            assume(oh >= 1 and ow >= 1)
            extra = {"count_include_pad": draw(st.integers(0, 1))} if mode == "AveragePool" else {}
            out = name("pool")
            nodes.append(helper.make_node(mode, [cur], [out], name=out, kernel_shape=[kh, kw], strides=[sh, sw],
                                          pads=pads, ceil_mode=ceil, **extra))
            cur, h, w = out, oh, ow
        elif op == "bn":
            out = name("bn")
            ins = [cur, const("s", rng.uniform(0.5, 1.5, c)), const("t", rng.standard_normal(c)),
                   const("m", rng.standard_normal(c)), const("v", rng.uniform(0.5, 2.0, c))]
            nodes.append(helper.make_node("BatchNormalization", ins, [out], name=out, epsilon=1e-5))
            cur = out
        elif op == "clip":
            out = name("clip")
            nodes.append(helper.make_node("Clip", [cur, const("lo", -0.5), const("hi", 0.7)], [out], name=out))
            cur = out
        elif op == "scale":  # a per-channel constant times the map (the constant first)
            out = name("scale")
            nodes.append(helper.make_node("Mul", [const("k", rng.standard_normal((c, 1, 1))), cur], [out], name=out))
            cur = out
        elif op == "add":  # a residual: the input plus a 1x1 conv of it
            side = name("side")
            nodes.append(helper.make_node("Conv", [cur, const("W", rng.standard_normal((c, c, 1, 1)) / np.sqrt(c))],
                                          [side], name=side))
            out = name("add")
            nodes.append(helper.make_node("Add", [cur, side], [out], name=out))
            cur = out
        else:  # concat with its own ReLU
            r, out = name("relu"), name("cat")
            nodes.append(helper.make_node("Relu", [cur], [r], name=r))
            nodes.append(helper.make_node("Concat", [cur, r], [out], name=out, axis=1))
            cur, c = out, 2 * c
    if draw(st.booleans()):  # a classifier head
        nodes += [helper.make_node("GlobalAveragePool", [cur], ["gap"]),
                  helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
                  helper.make_node("Gemm", ["flat", const("fc", rng.standard_normal((4, c))), const("fb", rng.standard_normal(4))],
                                   ["y"], transB=1)]
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(nodes, "h", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), x_shape


def _ort(model, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _close(ours, ref, what):
    assert ours.shape == ref.shape, what
    scale = max(float(np.abs(ref).max()), 1e-3)
    assert float(np.abs(ours - ref).max()) <= 1e-4 * scale, f"{what}: max err {np.abs(ours - ref).max():.3g}"


@given(graphs(), st.integers(0, 1000))
def test_random_graph_matches_onnxruntime(case, seed):
    model, x_shape = case
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    ref = _ort(model, x)
    for layout in ("nhwc", "nchw"):
        _close(pon.load(model, layout=layout).forward(x), ref, layout)


@given(graphs(), st.sampled_from([0.3, 0.6]), st.sampled_from(["uniform", "grid"]))
def test_random_perforated_graph_matches_its_export(case, rate, kind):
    model, x_shape = case
    ours = pon.load(model, plan={"rate": rate, "kind": kind, "seed": 2})
    assume(ours.masks)
    x = np.random.default_rng(3).standard_normal(x_shape).astype(np.float32)
    y = ours.forward(x)
    _close(y, _ort(pon.to_onnx(ours), x), "exported")
    _close(pon.load(model, plan={"rate": rate, "kind": kind, "seed": 2}, layout="nchw").forward(x), y, "nchw")
