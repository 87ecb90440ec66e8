"""Low-rank decomposition of graph IR nodes (perforated.search.lowrank_graph): exact at full rank, the
same network as the paper networks' low-rank path, ranks meeting a multiply-add ratio, ONNX import /
export and the command line."""
import os

import numpy as np
import pytest

from perforated import GraphModel, Model
from perforated.graph import Graph, GraphError, Node
from perforated.graph.networks import NETWORKS
from perforated.graph.rows import to_graph
from perforated.search import lowrank as LR
from perforated.search.lowrank_graph import (candidates, decompose_graph, graph_macs, select_ranks_graph)

onnx = pytest.importorskip("onnx")
import perforated.onnx as pon  # noqa: E402

_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _conv_graph(rng, group=1, stride=(1, 1), pads=(1, 2, 1, 0)):
    w = rng.standard_normal((6, 4 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    fc_w = rng.standard_normal((6 * 3 * 3, 5)).astype(np.float32)  # A @ B form (transB = 0)
    fc_b = rng.standard_normal((1, 5)).astype(np.float32)
    nodes = [Node("conv", "Conv", ["x", "w", "b"], ["c"], dict(kernel=(3, 3), strides=stride, pads=pads,
                                                               dilations=(1, 1), group=group)),
             Node("relu", "Relu", ["c"], ["r"]),
             Node("pool", "MaxPool", ["r"], ["p"], dict(kernel=(3, 3), strides=(3, 3), pads=(0, 0, 0, 0), ceil_mode=0)),
             Node("flat", "Flatten", ["p"], ["f"], dict(axis=1)),
             Node("fc", "Gemm", ["f", "fw", "fb"], ["y"], dict(transA=0, transB=0, alpha=0.5, beta=2.0))]
    return Graph({"x": (2, 4, 9, 10)}, ["y"], nodes, {"w": w, "b": b, "fw": fc_w, "fb": fc_b})


@pytest.mark.parametrize("group,stride", [(1, (1, 1)), (2, (2, 1))])
def test_full_rank_is_the_original_and_lower_ranks_differ(rng, group, stride):
    g = _conv_graph(rng, group, stride, pads=(1, 2, 1, 0) if stride == (1, 1) else (1, 1, 1, 1))
    if stride != (1, 1):  # the fc reads the pooled map: resize its weight to the new map
        g = Graph(g.inputs, g.outputs, g.nodes, dict(g.constants, fw=rng.standard_normal((18, 5)).astype(np.float32)))
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    ref = GraphModel(g, layout="nchw").forward(x)
    full = {"conv": min(4 // group * 3, 6 // group * 3), "fc": 5}
    d = decompose_graph(g, full)
    assert [n.name for n in d.nodes if n.op in ("Conv", "Gemm")] == ["conv/v", "conv", "fc/a", "fc"]
    for layout in ("nhwc", "nchw"):
        np.testing.assert_allclose(GraphModel(d, layout=layout).forward(x), ref, rtol=1e-4,
                                   atol=1e-4 * np.abs(ref).max())
    low = GraphModel(decompose_graph(g, {"conv": 1, "fc": 1})).forward(x)
    assert not np.allclose(low, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_same_network_as_the_paper_networks_low_rank_path():
    rows, shape = NETWORKS["nin"]["layers"](), NETWORKS["nin"]["input"]
    weights = LR.network_weights("nin")
    plan = LR.LowRankPlan("nin", {"conv2": {"rank": 20, "method": "spatial"}, "conv3": {"rank": 30, "method": "spatial"}})
    model, _ = LR.apply_plan(plan, 2, weights)
    graph = decompose_graph(to_graph(rows, shape, 2, weights), {"conv2": 20, "conv3": 30})
    x = np.random.default_rng(1).standard_normal((2,) + tuple(shape)).astype(np.float32)
    expected = model.forward(x)
    np.testing.assert_allclose(GraphModel(graph).forward(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert graph_macs(graph) == plan.multiply_adds()[1]


def test_ranks_meet_the_ratio():
    rows, shape = NETWORKS["alexnet"]["layers"](), NETWORKS["alexnet"]["input"]
    g = to_graph(rows, shape, 1, LR.network_weights("alexnet"))
    assert candidates(g) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert candidates(g, fc=True)[-3:] == ["fc6", "fc7", "fc8"]
    convs = sum(n.op == "Conv" for n in g.nodes)
    for ratio in (1.5, 2.0):
        ranks = select_ranks_graph(g, ratio)
        d = decompose_graph(g, ranks)
        assert graph_macs(d) <= graph_macs(g) / ratio
        assert graph_macs(d) > graph_macs(g) / ratio * 0.97  # ranks given back up to the budget
        assert sum(n.op == "Conv" for n in d.nodes) == convs + len(ranks)
    with pytest.raises(ValueError, match="ratio must be >= 1"):
        select_ranks_graph(g, 0.5)


def test_bad_requests_name_the_node(rng):
    g = _conv_graph(rng)
    with pytest.raises(GraphError, match="no node named 'nope'"):
        decompose_graph(g, {"nope": 2})
    with pytest.raises(GraphError, match=r"node 'relu' \(Relu\): has no data-free decomposition"):
        decompose_graph(g, {"relu": 2})
    with pytest.raises(GraphError, match=r"node 'conv' \(Conv\): spatial_decompose: rank must be an int in \[1, 12\]"):
        decompose_graph(g, {"conv": 13})
    with pytest.raises(GraphError, match="node 'pool'"):
        select_ranks_graph(g, 2.0, layers=["pool"])


@pytest.mark.skipif(_ASAN, reason="ONNX Runtime is not run under AddressSanitizer")
def test_onnx_load_lowrank_with_a_plan_exports_to_onnxruntime(tmp_path, rng, capsys):
    ort = pytest.importorskip("onnxruntime")
    from perforated.onnx.__main__ import main
    from perforated.onnx.exporter import graph_to_onnx

    g = _conv_graph(rng)
    path = tmp_path / "m.onnx"
    onnx.save(graph_to_onnx(g), str(path))
    model = pon.load(str(path), lowrank=1.3, plan={"layers": {"conv": {"kind": "uniform", "rate": 0.5, "seed": 1}}})
    assert "conv/v" in [n.name for n in model.graph.nodes] and set(model.masks) == {"conv"}
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    s = ort.InferenceSession(pon.to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
    ours = model.forward(x)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
    assert main(["export", str(path), "--lowrank", "1.5", "--out", str(tmp_path / "lr.onnx")]) == 0
    assert "fewer conv multiply-adds" in capsys.readouterr().out
    decomposed = onnx.load(str(tmp_path / "lr.onnx"))
    assert sum(n.op_type == "Conv" for n in decomposed.graph.node) == 2
    assert main(["info", str(path), "--lowrank", "1.5"]) == 0
    assert "conv/v" in capsys.readouterr().out


def test_a_ratio_out_of_reach_says_why(rng):
    g = _conv_graph(rng)  # the 3x3 conv is 972 of 1062 multiply-adds: 1x1 work and the fc stay
    with pytest.raises(ValueError, match=r"ratio 50 is out of reach: the 1 decomposable layers are \d+% of the "
                                         r"multiply-adds"):
        select_ranks_graph(g, 50.0)


def test_command_line_reports_a_bad_request_without_a_traceback(tmp_path, rng, capsys):
    from perforated.onnx.__main__ import main
    from perforated.onnx.exporter import graph_to_onnx

    path = tmp_path / "m.onnx"
    onnx.save(graph_to_onnx(_conv_graph(rng)), str(path))
    assert main(["info", str(path), "--lowrank", "50"]) == 2
    assert "ratio 50 is out of reach" in capsys.readouterr().err
