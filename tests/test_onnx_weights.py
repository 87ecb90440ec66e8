"""Weights for an ONNX graph from elsewhere (perforated.onnx.load(weights=...)): an .npz or a PyTorch
state_dict replaces the initializers of the same names before constant subgraphs are folded; names or
shapes that do not fit are refused, never half-applied."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import perforated.onnx as pon  # noqa: E402


def _model(w, b, fc):
    # the fc weight reaches the Gemm through a Transpose: a constant subgraph folded at import
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Transpose", ["fc"], ["fc_t"], perm=[1, 0]),
             helper.make_node("Gemm", ["f", "fc_t"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in (("w", w), ("b", b), ("fc", fc))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_npz_and_dict_weights_replace_initializers_before_folding(tmp_path, rng):
    shapes = {"w": (4, 3, 3, 3), "b": (4,), "fc": (5, 4)}
    zeros = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    real = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    expected = pon.load(_model(**real)).forward(x)
    np.savez(tmp_path / "w.npz", **real)
    for weights in (str(tmp_path / "w.npz"), real):
        np.testing.assert_allclose(pon.load(_model(**zeros), weights=weights).forward(x), expected, rtol=1e-6)
    partial = pon.load(_model(**real), weights={"fc": zeros["fc"]}).forward(x)  # the others stay
    np.testing.assert_array_equal(partial, 0)


def test_bad_weights_are_refused_by_name(tmp_path, rng):
    model = _model(np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32), np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"1 name\(s\) are no initializer of the graph, e.g. \['conv.weight'\]"):
        pon.load(model, weights={"conv.weight": np.zeros((4, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"weights\['b'\]: shape \(5,\), the graph's initializer has \(4,\)"):
        pon.load(model, weights={"b": np.zeros(5, np.float32)})
    (tmp_path / "w.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="expected an .npz or a PyTorch state_dict"):
        pon.load(model, weights=str(tmp_path / "w.txt"))
    with pytest.raises(ValueError, match="no file"):
        pon.load(model, weights=str(tmp_path / "missing.npz"))


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="PyTorch's exporter throws C++ exceptions, which the preloaded AddressSanitizer aborts on")
def test_pytorch_state_dict_of_a_fine_tuned_model(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, do_constant_folding=False, keep_initializers_as_inputs=True)
    with torch.no_grad():  # "fine-tuning": every parameter and batch-norm statistic changes
        for t in list(net.parameters()) + [net[1].running_mean, net[1].running_var]:
            t.add_(0.3 * torch.rand_like(t))
        expected = net(x).numpy()
    torch.save(net.state_dict(), tmp_path / "tuned.pt")
    before = pon.load(str(path)).forward(x.numpy())
    after = pon.load(str(path), weights=str(tmp_path / "tuned.pt")).forward(x.numpy())
    assert not np.allclose(before, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
