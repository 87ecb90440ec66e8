"""ONNX import into the graph IR (perforated.onnx, perforated.graph): the model-zoo graphs shipped in the
onnx wheel and small graphs of the forms the numpy API could not express, each checked against ONNX
Runtime on the same file; perforation by node name; errors that name the node."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import perforated.onnx as pon  # noqa: E402
from perforated.onnx.zoo import NAMES, zoo_model  # noqa: E402
from perforated import interpolate, make_mask  # noqa: E402
from perforated.graph import Graph, GraphError, GraphModel, Node  # noqa: E402

# ONNX Runtime is the reference; under the AddressSanitizer run (libasan preloaded to check our C
# library) it is not exercised: it would only be slower, and it checks nothing of ours.
_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
ort = None if _ASAN else pytest.importorskip("onnxruntime")
needs_ort = pytest.mark.skipif(ort is None, reason="ONNX Runtime is not run under AddressSanitizer")

ZOO_MODELS = NAMES


def ort_run(model, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


def zoo_with_weights(name: str, seed: int = 0):
    """A zoo graph with seeded random weights, logits out (perforated.onnx.zoo)."""
    try:
        return zoo_model(name, seed, softmax=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@needs_ort
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_matches_onnxruntime(rng, name):
    model = zoo_with_weights(name)
    ours = pon.load(model)
    x = rng.standard_normal(next(iter(ours.graph.inputs.values()))).astype(np.float32)
    ref = ort_run(model, x)
    assert rel_err(ours.forward(x), ref) < 1e-3
    # perforated: every perforable conv at rate 0.5 runs, and thins the multiply-adds
    perf = pon.load(model, plan={"rate": 0.5, "kind": "grid", "seed": 3})
    y = perf.forward(x)
    assert y.shape == ref.shape and np.isfinite(y).all()
    macs = perf.macs()
    assert len(perf.masks) == len(perf.perforable) > 0
    assert macs["planned"] < 0.6 * macs["dense"]


@needs_ort
def test_batch_argument_runs_each_image_as_alone(rng):
    model = zoo_with_weights("squeezenet")
    x = rng.standard_normal((3, 3, 224, 224)).astype(np.float32)
    y = pon.load(model, batch=3).forward(x)
    one = pon.load(model)
    for i in range(3):
        np.testing.assert_allclose(y[i], one.forward(x[i:i + 1])[0], rtol=1e-4, atol=1e-5)


# --- small graphs: the forms the numpy API could not express --------------------------------------

def make_model(nodes, x_shape, y_name="y", inits=(), opset=13):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check_against_ort(model, x, tol=1e-5):
    ref = ort_run(model, x)
    for layout in ("nhwc", "nchw"):  # the channels-last runners and the NCHW kernels
        y = pon.load(model, layout=layout).forward(x)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * float(np.abs(ref).max()), err_msg=layout)


CASES = {
    "conv_dilated_symmetric_pads": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[2, 3, 2, 3],
                                                      dilations=[2, 3], kernel_shape=[3, 3])],
                                    (2, 5, 12, 13), {"w": (7, 5, 3, 3), "b": (7,)}),
    "conv_asymmetric_pads_stride2": ([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[0, 1, 2, 1],
                                                       strides=[2, 2], kernel_shape=[3, 3])],
                                     (2, 4, 11, 10), {"w": (6, 4, 3, 3), "b": (6,)}),
    "conv_same_upper_groups": ([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", group=2,
                                                 strides=[2, 2])], (1, 4, 9, 8), {"w": (6, 2, 4, 4)}),
    "depthwise": ([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=8)],
                  (2, 8, 7, 7), {"w": (8, 1, 3, 3)}),
    "maxpool_floor_asymmetric": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                   pads=[0, 0, 1, 1])], (2, 3, 12, 11), {}),
    "maxpool_ceil": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                     (1, 3, 12, 12), {}),
    "maxpool_floor_resnet_stem": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                    pads=[1, 1, 1, 1])], (1, 2, 112, 112), {}),
    "avgpool_count_include_pad": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                    pads=[1, 1, 1, 1], count_include_pad=1)], (1, 3, 6, 7), {}),
    "avgpool_exclude_pad_ceil": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                                   pads=[1, 1, 1, 1], ceil_mode=1)], (1, 3, 7, 7), {}),
    "maxpool_pad_wider_than_half_kernel": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2],
                                                             pads=[1, 1, 1, 1])], (1, 2, 5, 5), {}),
    "global_max_pool": ([helper.make_node("GlobalMaxPool", ["x"], ["y"])], (2, 3, 5, 4), {}),
    "channel_shuffle": ([helper.make_node("Reshape", ["x", "s1"], ["r"]),
                         helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
                         helper.make_node("Reshape", ["t", "s2"], ["y"])],
                        (2, 6, 4, 4), {"s1": np.array([2, 2, 3, 4, 4]), "s2": np.array([2, 6, 4, 4])}),
    "concat_clip_add_broadcast": ([helper.make_node("Concat", ["x", "x"], ["c"], axis=1),
                                   helper.make_node("Clip", ["c", "lo", "hi"], ["k"]),
                                   helper.make_node("Add", ["k", "bias"], ["y"])],
                                  (2, 3, 4, 4), {"lo": np.float32(-0.5), "hi": np.float32(0.7), "bias": (1, 6, 1, 1)}),
    "gemm_transA_alpha_beta_rowbias": ([helper.make_node("Flatten", ["x"], ["f"]),
                                        helper.make_node("Transpose", ["f"], ["ft"], perm=[1, 0]),
                                        helper.make_node("Gemm", ["ft", "w", "c"], ["y"], transA=1, transB=1,
                                                         alpha=0.5, beta=2.0)],
                                       (3, 2, 2, 2), {"w": (5, 8), "c": (1, 5)}),
    # the fully connected form (the C layer): B constant, C absent, per output, or one value
    "gemm_fc_transB_alpha_beta_rowbias": ([helper.make_node("Flatten", ["x"], ["f"]),
                                           helper.make_node("Gemm", ["f", "w", "c"], ["y"], transB=1,
                                                            alpha=0.5, beta=2.0)],
                                          (3, 2, 2, 2), {"w": (5, 8), "c": (1, 5)}),
    "gemm_fc_no_trans_vector_bias": ([helper.make_node("Flatten", ["x"], ["f"]),
                                      helper.make_node("Gemm", ["f", "w", "c"], ["y"])],
                                     (4, 3, 3, 2), {"w": (18, 7), "c": (7,)}),
    "gemm_fc_scalar_bias_no_c": ([helper.make_node("Flatten", ["x"], ["f"]),
                                  helper.make_node("Gemm", ["f", "w", "c"], ["g"], transB=1, beta=-1.5),
                                  helper.make_node("Gemm", ["g", "w2"], ["y"], alpha=3.0)],
                                 (2, 2, 2, 2), {"w": (6, 8), "c": (1,), "w2": (6, 3)}),
    "gemm_batch_shaped_c_numpy_path": ([helper.make_node("Flatten", ["x"], ["f"]),
                                        helper.make_node("Gemm", ["f", "w", "c"], ["y"], transB=1)],
                                       (3, 2, 2, 2), {"w": (5, 8), "c": (3, 5)}),
    "softmax_axis1_opset13": ([helper.make_node("Softmax", ["x"], ["y"], axis=1)], (2, 5, 3, 3), {}),
    "batchnorm_unfused_lrn": ([helper.make_node("LRN", ["x"], ["l"], size=3, alpha=1e-3, beta=0.75, bias=2.0),
                               helper.make_node("BatchNormalization", ["l", "g", "bb", "m", "v"], ["y"],
                                                epsilon=1e-3)],
                              (2, 4, 3, 3), {"g": (4,), "bb": (4,), "m": (4,), "v": "positive4"}),
}


@needs_ort
@pytest.mark.parametrize("case", sorted(CASES))
def test_small_graph_matches_onnxruntime(rng, case):
    nodes, x_shape, specs = CASES[case]
    inits = []
    for name, spec in specs.items():
        if isinstance(spec, str):  # "positive4": a variance vector
            v = rng.uniform(0.5, 2.0, int(spec[len("positive"):])).astype(np.float32)
        elif isinstance(spec, tuple):
            v = rng.standard_normal(spec).astype(np.float32)
        else:
            v = spec
        inits.append((name, v))
    model = make_model(nodes, x_shape, inits=inits)
    check_against_ort(model, rng.standard_normal(x_shape).astype(np.float32))


@needs_ort
def test_conv_batchnorm_relu_folds_and_matches(rng):
    c = 5
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    inits = [("w", rng.standard_normal((c, 3, 3, 3)).astype(np.float32)),
             ("g", rng.standard_normal(c).astype(np.float32)), ("b", rng.standard_normal(c).astype(np.float32)),
             ("m", rng.standard_normal(c).astype(np.float32)), ("v", rng.uniform(0.5, 2, c).astype(np.float32))]
    model = make_model(nodes, (2, 3, 8, 8), inits=inits)
    ours = pon.load(model)
    assert [n.op for n in ours.graph.nodes] == ["Conv"]  # the batch norm and the ReLU went into the conv
    assert ours.graph.nodes[0].attrs["relu"]
    check_against_ort(model, rng.standard_normal((2, 3, 8, 8)).astype(np.float32))


# --- perforation by node name ------------------------------------------------------------------------

def test_plan_by_node_name_perforates_that_conv_only(rng):
    w1 = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 6, 1, 1)).astype(np.float32)
    graph = Graph({"x": (2, 3, 9, 9)}, ["y"],
                  [Node("first", "Conv", ["x", "w1"], ["h"], {"kernel": (3, 3), "strides": (1, 1),
                                                             "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1}),
                   Node("second", "Conv", ["h", "w2"], ["y"], {"kernel": (1, 1), "strides": (1, 1),
                                                              "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1})],
                  {"w1": w1, "w2": w2})
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    dense = GraphModel(graph)
    mask = make_mask("uniform", (9, 9), 0.6, seed=4)
    plan = {"layers": {"first": {"kind": "indices", "rate": 0.6, "seed": 4, "indices": mask.indices.tolist()}}}
    perf = GraphModel(graph, plan=plan)
    assert set(perf.masks) == {"first"}
    h = dense.run(x)  # the dense hidden map, through a graph whose output is h
    h_dense = GraphModel(Graph({"x": (2, 3, 9, 9)}, ["h"], [graph.nodes[0]], {"w1": w1})).forward(x)
    compact = np.ascontiguousarray(h_dense.reshape(2, 6, 81)[:, :, mask.indices])
    h_perf = interpolate(compact, mask)
    expect = np.einsum("oc,nchw->nohw", w2[:, :, 0, 0], h_perf)
    np.testing.assert_allclose(perf.forward(x), expect, rtol=1e-4, atol=1e-4)
    assert not np.allclose(perf.forward(x), h["y"], atol=1e-3)
    conv_rows = {r["name"]: r for r in perf.convs()}
    assert conv_rows["first"]["planned_macs"] == 6 * 27 * mask.count
    # the 1x1 conv reads the compact output and computes the kept positions only
    assert conv_rows["second"]["planned_macs"] == conv_rows["second"]["macs"] // 81 * mask.count
    assert conv_rows["second"]["rate"] == 0.0  # not perforated by the plan


def test_uniform_plan_covers_perforable_convs_and_skips_1x1_maps(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Conv", ["g", "w2"], ["y"])]
    model = make_model(nodes, (1, 3, 6, 6), inits=[("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
                                                   ("w2", rng.standard_normal((2, 4, 1, 1)).astype(np.float32))])
    m = pon.load(model, plan={"rate": 0.5, "kind": "uniform"})
    assert m.perforable == ["c"]  # the 1x1 map of the second conv cannot be thinned
    assert set(m.masks) == set(m.perforable)
    assert m.forward(rng.standard_normal((1, 3, 6, 6)).astype(np.float32)).shape == (1, 2, 1, 1)


# --- errors name the node, the op and the attribute -------------------------------------------------

def test_unsupported_op_is_named_before_running():
    model = make_model([helper.make_node("Erf", ["x"], ["y"], name="my_erf")], (1, 2, 3, 3))
    with pytest.raises(GraphError, match=r"my_erf.*Erf.*not supported"):
        pon.load(model)


def test_dilation_beyond_the_padded_input_is_refused_with_its_node(rng):
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], dilations=[5, 5], name="dil")], (1, 2, 9, 9),
                       inits=[("w", rng.standard_normal((3, 2, 3, 3)).astype(np.float32))])
    with pytest.raises(GraphError, match=r"dil.*dilation 5"):
        pon.load(model)


@needs_ort
@pytest.mark.parametrize("kind", ["dense", "grid"])
def test_dilated_conv_matches_onnxruntime_and_exports(rng, kind):
    """Dilation (asymmetric pads, stride, groups) runs on the C plans: dense against ONNX Runtime in both
    layouts; perforated, its exported standard-op graph in ONNX Runtime against ours."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], dilations=[2, 3], pads=[2, 1, 3, 2], strides=[1, 2],
                              group=2, name="conv"),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [("w", rng.standard_normal((6, 2, 3, 3)).astype(np.float32)),
             ("b", rng.standard_normal(6).astype(np.float32))]
    model = make_model(nodes, (2, 4, 13, 12), inits=inits)
    x = rng.standard_normal((2, 4, 13, 12)).astype(np.float32)
    if kind == "dense":
        check_against_ort(model, x)
    else:
        perf = pon.load(model, plan={"rate": 0.5, "kind": kind, "seed": 1})
        assert set(perf.masks) == {"conv"}
        exported_matches_ours(perf, x)


def test_runtime_weights_are_refused(rng):
    model = make_model([helper.make_node("Conv", ["x", "x"], ["y"], name="c")], (1, 1, 3, 3))
    with pytest.raises(GraphError, match="must be a constant"):
        pon.load(model)


def test_symbolic_batch_needs_the_batch_argument(rng):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(GraphError, match="symbolic"):
        pon.load(model)
    assert pon.load(model, batch=4).forward(np.ones((4, 2, 3, 3), np.float32)).shape == (4, 2, 3, 3)


def test_plan_naming_a_missing_or_non_conv_node_is_refused(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"], name="act")]
    model = make_model(nodes, (1, 2, 5, 5), inits=[("w", rng.standard_normal((3, 2, 3, 3)).astype(np.float32))])
    for bad in ("act", "nope"):
        with pytest.raises(ValueError, match=f"{bad}.*not a perforable Conv"):
            pon.load(model, plan={"layers": {bad: {"kind": "uniform", "rate": 0.5}}})
    with pytest.raises(ValueError, match="rate"):
        pon.load(model, plan={"layers": {"conv": {"kind": "uniform", "rate": 1.5}}})


def test_wrong_input_shape_is_refused(rng):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], (1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"input 'x' must have shape \(1, 2, 3, 3\)"):
        pon.load(model).forward(np.ones((2, 2, 3, 3), np.float32))


def test_graph_ir_rejects_cycles_and_unknown_values():
    with pytest.raises(GraphError, match="cycle"):
        Graph({"x": (1, 1)}, ["b"], [Node("n1", "Relu", ["b"], ["a"]), Node("n2", "Relu", ["a"], ["b"])])
    with pytest.raises(GraphError, match="'ghost'"):
        Graph({"x": (1, 1)}, ["a"], [Node("n1", "Add", ["x", "ghost"], ["a"])])


# --- the command line ----------------------------------------------------------------------------

def test_command_line_info_run_perforate(tmp_path, rng, capsys):
    from perforated.onnx.__main__ import main

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c"], ["y"], name="relu1")]
    path = tmp_path / "m.onnx"
    onnx.save(make_model(nodes, (1, 3, 8, 8), inits=[("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]),
              str(path))
    assert main(["info", str(path), "--rate", "0.5", "--kind", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "0.50" in out
    plan_path = tmp_path / "plan.json"
    assert main(["perforate", str(path), "--rate", "0.5", "--kind", "uniform", "--out", str(plan_path)]) == 0
    plan = json.loads(plan_path.read_text())
    assert plan["layers"]["conv1"]["kind"] == "indices" and len(plan["layers"]["conv1"]["indices"]) == 32
    a = pon.load(str(path), plan=str(plan_path))
    b = pon.load(str(path), plan={"rate": 0.5, "kind": "uniform"})
    np.testing.assert_array_equal(a.masks["conv1"].indices, b.masks["conv1"].indices)
    y_path = tmp_path / "y.npy"
    assert main(["run", str(path), "--plan", str(plan_path), "--out", str(y_path)]) == 0
    assert np.load(y_path).shape == (1, 4, 8, 8)


# --- export: standard ONNX ops that stock ONNX Runtime runs ----------------------------------------

def exported_matches_ours(model, x):
    proto = pon.to_onnx(model)
    assert {n.domain for n in proto.graph.node} <= {""}  # no custom operator
    np.testing.assert_allclose(ort_run(proto, x), model.forward(x), rtol=1e-4,
                               atol=1e-4 * float(np.abs(model.forward(x)).max()))
    return proto


@needs_ort
@pytest.mark.parametrize("name", ["squeezenet", "resnet50", "shufflenet", "inception_v1"])
def test_exported_zoo_model_runs_in_onnxruntime_as_ours(rng, name):
    model = zoo_with_weights(name)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    exported_matches_ours(pon.load(model), x)
    perf = pon.load(model, plan={"rate": 0.5, "kind": "grid", "seed": 2})
    proto = exported_matches_ours(perf, x)
    assert "Gather" in {n.op_type for n in proto.graph.node}


@needs_ort
@pytest.mark.parametrize("kind", ["uniform", "grid"])
def test_exported_perforated_conv_with_groups_pads_stride_and_relu(rng, kind):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[0, 1, 2, 1], strides=[2, 1], group=2,
                              name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)]
    inits = [("w", rng.standard_normal((6, 2, 3, 3)).astype(np.float32)),
             ("b", rng.standard_normal(6).astype(np.float32))]
    model = pon.load(make_model(nodes, (2, 4, 11, 9), inits=inits), plan={"rate": 0.5, "kind": kind, "seed": 1})
    assert set(model.masks) == {"conv"} and model.graph.nodes[0].attrs["relu"]
    exported_matches_ours(model, rng.standard_normal((2, 4, 11, 9)).astype(np.float32))


@needs_ort
def test_command_line_export(tmp_path, rng):
    from perforated.onnx.__main__ import main

    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv1")]
    path, out = tmp_path / "m.onnx", tmp_path / "p.onnx"
    onnx.save(make_model(nodes, (1, 3, 8, 8), inits=[("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]),
              str(path))
    assert main(["export", str(path), "--rate", "0.5", "--kind", "uniform", "--out", str(out)]) == 0
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ours = pon.load(str(path), plan={"rate": 0.5, "kind": "uniform"}).forward(x)
    np.testing.assert_allclose(ort_run(onnx.load(str(out)), x), ours, rtol=1e-5, atol=1e-5)


@needs_ort
def test_exported_legacy_softmax_keeps_its_semantics(rng):
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], (2, 3, 2, 2), opset=9)
    ours = pon.load(model)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(ours.forward(x), ort_run(model, x), rtol=1e-5, atol=1e-6)
    exported_matches_ours(ours, x)


@needs_ort
def test_exported_perforated_model_runs_in_openvino(rng):
    ov = pytest.importorskip("openvino")
    model = pon.load(zoo_with_weights("squeezenet"), plan={"rate": 0.5, "kind": "grid", "seed": 2})
    core = ov.Core()
    compiled = core.compile_model(core.read_model(pon.to_onnx(model).SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    request = compiled.create_infer_request()
    request.infer({0: x})
    ours = model.forward(x)
    np.testing.assert_allclose(request.get_output_tensor(0).data, ours, rtol=1e-4,
                               atol=1e-4 * float(np.abs(ours).max()))


def test_repeated_forwards_reuse_buffers_without_aliasing(rng):
    """Channels-last arrays are pooled from call to call: a second forward must not change what the
    first returned, and must equal a fresh model's answer (Identity passes an array on unchanged)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Identity", ["r"], ["i"]),
             helper.make_node("Add", ["i", "r"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    model = make_model(nodes, (2, 3, 6, 6), inits=[("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))])
    m = pon.load(model, plan={"rate": 0.4, "kind": "uniform"})
    x1, x2 = (rng.standard_normal((2, 3, 6, 6)).astype(np.float32) for _ in range(2))
    y1 = m.forward(x1)
    kept = y1.copy()
    y2 = m.forward(x2)
    np.testing.assert_array_equal(y1, kept)
    np.testing.assert_array_equal(y2, pon.load(model, plan={"rate": 0.4, "kind": "uniform"}).forward(x2))
    np.testing.assert_array_equal(m.forward(x1), kept)


@needs_ort
@pytest.mark.parametrize("perforate", [False, True])
def test_residual_add_fuses_into_the_conv_and_matches(rng, perforate):
    """conv -> (+ shortcut) -> relu: the add becomes the conv's residual input (its output pass adds
    it), unless the conv is perforated (its output is compact, the add stays)."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("Conv", ["hr", "w2"], ["c"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Add", ["c", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"])]
    inits = [("w1", rng.standard_normal((4, 4, 3, 3)).astype(np.float32)),
             ("b1", rng.standard_normal(4).astype(np.float32)),
             ("w2", rng.standard_normal((4, 4, 3, 3)).astype(np.float32))]
    model = make_model(nodes, (2, 4, 7, 7), inits=inits)
    plan = {"layers": {"c2": {"kind": "uniform", "rate": 0.5}}} if perforate else None
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    for layout in ("nhwc", "nchw"):
        m = pon.load(model, plan=plan, layout=layout)
        ops = [n.op for n in m.graph.nodes]
        assert ops == (["Conv", "Conv", "Add"] if perforate else ["Conv", "Conv"]), ops
        if perforate:
            exported_matches_ours(m, x)
        else:
            np.testing.assert_allclose(m.forward(x), ort_run(model, x), rtol=1e-5, atol=1e-4)
            exported_matches_ours(m, x)


def _pool_impact_graph(rng):
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              name="p1"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap")]
    inits = [("w1", rng.standard_normal((6, 3, 3, 3)).astype(np.float32)),
             ("b1", rng.standard_normal(6).astype(np.float32)),
             ("w2", rng.standard_normal((5, 6, 3, 3)).astype(np.float32))]
    return make_model(nodes, (2, 3, 12, 11), inits=inits)


@needs_ort
def test_pooling_and_impact_masks_on_an_imported_graph(rng, tmp_path):
    model = _pool_impact_graph(rng)
    scores = rng.uniform(0, 1, (6, 6)).astype(np.float32)  # c2's output map: 6x6
    np.savez(tmp_path / "scores.npz", c2=scores)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({"layers": {"c1": {"kind": "pooling", "rate": 0.5, "seed": 3},
                                                "c2": {"kind": "impact", "rate": 0.5, "seed": 4,
                                                       "scores": "scores.npz"}}}))  # relative to the plan
    perf = pon.load(model, plan=str(plan_path))
    want_c1 = make_mask("pooling", (12, 11), 0.5, 3, pool=((3, 3), (2, 2), (1, 1)))
    want_c2 = make_mask("impact", (6, 6), 0.5, 4, scores=scores)
    np.testing.assert_array_equal(perf.masks["c1"].indices, want_c1.indices)
    np.testing.assert_array_equal(perf.masks["c2"].indices, want_c2.indices)
    exported_matches_ours(perf, rng.standard_normal((2, 3, 12, 11)).astype(np.float32))
    # the global pooling after c2 is one window over its map: a pooling mask there is legal too
    assert "c2" in pon.load(model, plan={"layers": {"c2": {"kind": "pooling", "rate": 0.5, "seed": 0}}}).masks


def test_graph_mask_kinds_name_what_is_missing(rng, tmp_path):
    model = _pool_impact_graph(rng)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="alone")]
    lone = make_model(nodes, (1, 3, 8, 8), inits=[("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))])
    with pytest.raises(ValueError, match="alone is a 'pooling' mask but no pooling window follows"):
        pon.load(lone, plan={"layers": {"alone": {"kind": "pooling", "rate": 0.5, "seed": 0}}})
    with pytest.raises(ValueError, match="c2 is an impact mask but names no 'scores' file"):
        pon.load(model, plan={"layers": {"c2": {"kind": "impact", "rate": 0.5, "seed": 0}}})
    np.savez(tmp_path / "other.npz", c1=np.ones((12, 11), np.float32))
    with pytest.raises(ValueError, match="has no scores for node 'c2'"):
        pon.load(model, plan={"layers": {"c2": {"kind": "impact", "rate": 0.5, "seed": 0,
                                                "scores": str(tmp_path / "other.npz")}}})


@needs_ort
def test_perforated_conv_feeds_the_next_conv_compact(rng):
    """conv (perforated) -> relu -> conv: the second conv reads the compact output through the mask
    (no interpolated map written); the answer equals the explicit interpolation of the NCHW layout, of
    ONNX Runtime on the exported graph, and of the same plan with the compact flow cut by a second reader."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[2, 2, 2, 2], strides=[2, 2], name="c2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"], pads=[0, 0, 0, 0], name="c3")]
    inits = [("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)),
             ("b1", rng.standard_normal(8).astype(np.float32)),
             ("w2", rng.standard_normal((6, 8, 5, 5)).astype(np.float32)),
             ("b2", rng.standard_normal(6).astype(np.float32)),
             ("w3", rng.standard_normal((4, 6, 1, 1)).astype(np.float32))]
    model = make_model(nodes, (2, 3, 13, 12), inits=inits)
    plan = {"layers": {"c1": {"kind": "uniform", "rate": 0.5, "seed": 1},
                       "c2": {"kind": "grid", "rate": 0.5, "seed": 2}}}
    x = rng.standard_normal((2, 3, 13, 12)).astype(np.float32)
    ours = pon.load(model, plan=plan)
    layout = lambda m, c: m.layouts[m.graph.node(c).outputs[0]]  # noqa: E731 - (relus are fused into the convs)
    assert [layout(ours, c) for c in ("c1", "c2")] == ["compact", "compact"]  # both read by the next conv
    explicit = pon.load(model, plan=plan, layout="nchw")
    np.testing.assert_allclose(ours.forward(x), explicit.forward(x), rtol=1e-5, atol=1e-5)
    exported_matches_ours(ours, x)
    # a second reader of c1's output that takes it compact too (a 1x1 conv): c1 stays compact, the 1x1
    # conv computes the kept positions and interpolates its own output (a graph output)
    def two_outputs(nodes, inits):  # outputs y and z
        model = make_model(nodes, (2, 3, 13, 12), inits=inits)
        model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
        return model
    nodes2 = nodes + [helper.make_node("Conv", ["r1", "w4"], ["z"], name="c4")]
    w4 = ("w4", rng.standard_normal((2, 8, 1, 1)).astype(np.float32))
    two = pon.load(two_outputs(nodes2, inits + [w4]), plan=plan)
    assert layout(two, "c1") == "compact" and layout(two, "c2") == "compact" and two.layouts["z"] == "nhwc"
    np.testing.assert_allclose(two.forward(x), ours.forward(x), rtol=1e-5, atol=1e-5)
    z = two.run(x)["z"]
    np.testing.assert_allclose(z, pon.load(two_outputs(nodes2, inits + [w4]), plan=plan, layout="nchw").run(x)["z"],
                               rtol=1e-5, atol=1e-5)
    # a second reader that needs the full map (a flatten): c1 is interpolated once, for both readers
    nodes3 = nodes + [helper.make_node("Flatten", ["r1"], ["z"], axis=1)]
    three = pon.load(two_outputs(nodes3, inits), plan=plan)
    assert layout(three, "c1") == "nhwc" and layout(three, "c2") == "compact"
    np.testing.assert_allclose(three.forward(x), ours.forward(x), rtol=1e-5, atol=1e-5)

@needs_ort
def test_adds_and_concats_of_compact_values_stay_compact(rng):
    """perforated conv -> 1x1 conv; their add and the concat of both stay compact on the conv's mask and
    the pooling reads the concat through it. Equals the explicit NCHW layout and ONNX Runtime on the
    export; an add with a full map instead gets the interpolated map."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="c2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Add", ["r1", "r2"], ["s"], name="add"),
             helper.make_node("Mul", ["s", "k"], ["m"], name="mul"),
             helper.make_node("Concat", ["m", "r2"], ["cat"], axis=1, name="cat"),
             helper.make_node("MaxPool", ["cat"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    inits = [("w1", rng.standard_normal((5, 3, 3, 3)).astype(np.float32)),
             ("b1", rng.standard_normal(5).astype(np.float32)),
             ("w2", rng.standard_normal((5, 5, 1, 1)).astype(np.float32)),
             ("b2", rng.standard_normal(5).astype(np.float32)),
             ("k", rng.standard_normal((5, 1, 1)).astype(np.float32))]
    model = make_model(nodes, (2, 3, 10, 9), inits=inits)
    plan = {"layers": {"c1": {"kind": "uniform", "rate": 0.5, "seed": 3}}}
    x = rng.standard_normal((2, 3, 10, 9)).astype(np.float32)
    ours = pon.load(model, plan=plan)
    assert [ours.layouts[v] for v in ("r1", "r2", "s", "m", "cat")] == ["compact"] * 5
    np.testing.assert_allclose(ours.forward(x), pon.load(model, plan=plan, layout="nchw").forward(x),
                               rtol=1e-5, atol=1e-5)
    exported_matches_ours(ours, x)
    # the add reads a full map too: r1 is interpolated, c2 (a 1x1 conv on nothing compact) runs full
    nodes[4] = helper.make_node("Add", ["r1", "x5"], ["s"], name="add")
    nodes.insert(4, helper.make_node("Conv", ["x", "w3"], ["x5"], pads=[1, 1, 1, 1], name="c3"))
    model = make_model(nodes, (2, 3, 10, 9), inits=inits + [("w3", rng.standard_normal((5, 3, 3, 3)).astype(np.float32))])
    mixed = pon.load(model, plan=plan)
    assert [mixed.layouts[v] for v in ("r1", "r2", "s", "cat")] == ["nhwc"] * 4
    np.testing.assert_allclose(mixed.forward(x), pon.load(model, plan=plan, layout="nchw").forward(x),
                               rtol=1e-5, atol=1e-5)


def test_unreadable_files_and_unknown_opsets_are_refused_by_name(tmp_path, rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    w = [("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]
    data = make_model(nodes, (1, 3, 8, 8), inits=w).SerializeToString()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.onnx' is not a readable ONNX model"):
        pon.load(str(tmp_path / "cut.onnx"))
    with pytest.raises(ValueError, match="no ONNX file at"):
        pon.load(str(tmp_path / "none.onnx"))
    with pytest.raises(GraphError, match="opset 99 of the default domain is not supported"):
        pon.load(make_model(nodes, (1, 3, 8, 8), inits=w, opset=99))
    with pytest.raises(GraphError, match=r"node 'conv' \(Conv\): reads 'w', which is no graph input, initializer"):
        pon.load(make_model(nodes, (1, 3, 8, 8)))  # the weight's initializer is missing


def test_a_product_with_a_constant_first_reads_a_compact_input(rng):
    """Mul(k, compact) as the graph's output: computed on the compact tensor, then interpolated once."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Mul", ["k", "r1"], ["y"], name="mul")]
    inits = [("w1", rng.standard_normal((5, 3, 3, 3)).astype(np.float32)),
             ("k", rng.standard_normal((5, 1, 1)).astype(np.float32))]
    model = make_model(nodes, (2, 3, 7, 6), inits=inits)
    plan = {"layers": {"c1": {"kind": "uniform", "rate": 0.5, "seed": 3}}}
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    ours = pon.load(model, plan=plan)
    assert ours.layouts["r1"] == "compact" and ours.layouts["y"] == "nhwc"
    np.testing.assert_allclose(ours.forward(x), pon.load(model, plan=plan, layout="nchw").forward(x),
                               rtol=1e-5, atol=1e-5)


@needs_ort
@pytest.mark.parametrize("pool", [
    dict(kernel_shape=[1, 1], strides=[2, 1], pads=[0, 0, 0, 0]),   # rows: the last ceil window is dropped
    dict(kernel_shape=[1, 2], strides=[2, 2], pads=[0, 1, 0, 0]),   # rows dropped, columns keep a ceil window
])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_ceil_pooling_whose_last_window_is_dropped_exports(rng, pool, op):
    """ONNX's opset-13 shape inference counts a ceil-mode window that starts past the input, which ONNX
    Runtime's kernel and ours drop: the export says the same windows without that ambiguity, so a
    perforated conv on either side of the pooling exports and runs in ONNX Runtime to our output."""
    extra = {"count_include_pad": 1} if op == "AveragePool" else {}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node(op, ["c1"], ["p"], ceil_mode=1, name="pool", **pool, **extra),
             helper.make_node("Conv", ["p", "w2"], ["y"], pads=[0, 0, 1, 0], name="c2")]
    inits = [("w1", rng.standard_normal((3, 2, 3, 3)).astype(np.float32)),
             ("w2", rng.standard_normal((2, 3, 2, 1)).astype(np.float32))]
    model = make_model(nodes, (1, 2, 4, 5), inits=inits)
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(pon.load(model).forward(x), ort_run(model, x), rtol=1e-5, atol=1e-5)
    for conv in ("c1", "c2"):
        exported_matches_ours(pon.load(model, plan={"layers": {conv: {"kind": "uniform", "rate": 0.4, "seed": 1}}}), x)
