"""The paper's networks in the graph IR (perforated.graph.rows): the rows' graph runs in GraphModel to
the rows' Model output, its shapes are the IR's shape inference, and the costs follow Model's rule."""
import numpy as np
import pytest

from perforated import GraphModel, Model, PerforationPlan
from perforated.graph.networks import NETWORKS
from perforated.graph.ops import infer_shapes
from perforated.graph.rows import conv_output_sizes, layer_costs, to_graph, trace, weight_shapes
from perforated.search import lowrank as LR


def _rows(net):
    return NETWORKS[net]["layers"](), NETWORKS[net]["input"]


@pytest.mark.parametrize("net", ["nin", "alexnet", "vgg16"])
def test_trace_is_the_graph_shape_inference(net):
    rows, shape = _rows(net)
    g = to_graph(rows, shape, batch=3)
    shapes = infer_shapes(g)
    traced = trace(rows, shape, batch=3)
    assert list(traced) == [name for _, name, _ in rows]
    for name, s in traced.items():
        assert shapes[name] == s
    assert shapes["y"] == (3, NETWORKS[net]["classes"])
    assert all(v.nbytes == 4 * v.size and v.strides == (0,) * v.ndim for v in g.constants.values())


def test_known_sizes():
    rows, shape = _rows("nin")
    assert conv_output_sizes(rows, shape) == {"conv1": (32, 32), "cccp1": (32, 32), "cccp2": (32, 32),
                                             "conv2": (16, 16), "cccp3": (16, 16), "cccp4": (16, 16),
                                             "conv3": (8, 8), "cccp5": (8, 8), "cccp6": (8, 8)}
    rows, shape = _rows("alexnet")  # Caffe's ceil-mode pooling: 55 -> 27 -> 13 -> 6
    t = trace(rows, shape)
    assert (t["pool1"], t["pool2"], t["pool5"]) == ((1, 96, 27, 27), (1, 256, 13, 13), (1, 256, 6, 6))
    assert weight_shapes(rows, shape)["conv2"] == ((256, 48, 5, 5), (256,))
    assert weight_shapes(rows, shape)["fc6"] == ((4096, 9216), (4096,))


@pytest.mark.parametrize("net,batch", [("nin", 2), ("alexnet", 1)])
def test_rows_graph_runs_to_the_model_output(net, batch):
    rows, shape = _rows(net)
    model = Model(net, batch=batch)
    weights = {name: {"weight": p["weight"], "bias": p["bias"]} for name, p in model.params.items()}
    x = np.random.default_rng(3).standard_normal((batch,) + tuple(shape)).astype(np.float32)
    expected = model.forward(x)
    got = GraphModel(to_graph(rows, shape, batch, weights)).forward(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_layer_costs_follow_the_model():
    rows, shape = _rows("nin")
    plan = PerforationPlan.uniform_rate("nin", 0.5, kind="uniform", seed=1)
    model = Model("nin", batch=1, plan=plan)
    counts = {name: m.count for name, m in model.masks.items()}
    assert layer_costs(rows, shape, counts)[0] == model.multiply_adds()
    assert layer_costs(rows, shape)[0] == Model("nin", batch=1).multiply_adds() == 222486528
    # low-rank rows: non-square kernels and pads
    lr_rows, parts, _ = LR.rewrite_rows(rows, {"conv2": {"rank": 32, "method": "spatial"}})
    a, b = parts["conv2"]
    total, info = layer_costs(lr_rows, shape)
    assert (info[a]["kernel"], info[a]["oh"], info[a]["ow"]) == ((5, 1), 16, 16)
    assert (info[b]["kernel"], info[b]["oh"], info[b]["ow"], info[b]["c_in"]) == ((1, 5), 16, 16, 32)
    assert info[a]["macs"] == 256 * 32 * 96 * 5 and info[b]["macs"] == 256 * 192 * 32 * 5
    assert total == 222486528 - 256 * 192 * 96 * 25 + info[a]["macs"] + info[b]["macs"]


def test_to_graph_checks_weights():
    rows, shape = _rows("nin")
    weights = {n: {"weight": np.zeros(w, np.float32), "bias": np.zeros(b, np.float32)}
               for n, (w, b) in weight_shapes(rows, shape).items()}
    to_graph(rows, shape, 1, weights)
    del weights["cccp2"]["bias"]
    with pytest.raises(ValueError, match="'bias' of layer 'cccp2'"):
        to_graph(rows, shape, 1, weights)
    weights["cccp2"]["bias"] = np.zeros(95, np.float32)
    with pytest.raises(ValueError, match=r"weights\['cccp2'\]\['bias'\]: shape \(95,\), expected \(96,\)"):
        to_graph(rows, shape, 1, weights)
    with pytest.raises(ValueError, match="unknown layer kind 'norm'"):
        to_graph(rows + [("norm", "n", {})], shape)


def test_graph_model_drops_identities_but_keeps_an_output():
    rows, shape = _rows("nin")
    g = to_graph(rows, shape, 2)
    assert sum(n.op == "Dropout" for n in g.nodes) == 2 and g.nodes[-1].op == "Identity"
    ops = [n.op for n in GraphModel(g).graph.nodes]
    assert "Dropout" not in ops and ops[-1] == "Identity"  # the Identity writes the graph's output


@pytest.mark.parametrize("net,batch,rate", [("nin", 2, 0.5), ("alexnet", 1, 0.4)])
def test_perforated_rows_graph_flows_compact_like_the_model(net, batch, rate):
    """The paper's compact flow on the graph engine: NIN's 1x1 convs after a perforated conv compute the
    kept positions only and the pooling reads through the mask, as Model does; same output, same MACs."""
    rows, shape = _rows(net)
    plan = PerforationPlan.uniform_rate(net, rate, kind="grid")
    model = Model(net, batch=batch, plan=plan)
    weights = {name: {"weight": p["weight"], "bias": p["bias"]} for name, p in model.params.items()}
    graph = GraphModel(to_graph(rows, shape, batch, weights), plan=plan)
    x = np.random.default_rng(5).standard_normal((batch,) + tuple(shape)).astype(np.float32)
    expected = model.forward(x)
    np.testing.assert_allclose(graph.forward(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert graph.macs()["planned"] == sum(m for name, m in _conv_macs(model).items())
    if net == "nin":  # conv1 -> cccp1 -> cccp2 -> pool1: compact all the way to the pooling
        out = lambda n: graph.layouts[graph.graph.node(n).outputs[0]]  # noqa: E731 (ReLUs are fused)
        assert [out(n) for n in ("conv1", "cccp1", "cccp2", "conv2", "cccp3", "cccp4")] == ["compact"] * 6


def _conv_macs(model):
    return {name: step.macs for step, (kind, name, _) in zip(model._layer_steps(), model.rows) if kind == "conv"}
