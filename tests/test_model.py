"""Networks built into models: compact propagation equals explicit interpolation, gradients, metrics,
perforation plans and weights on disk."""
import json

import numpy as np
import pytest

import perforated as P
from perforated.graph.model import Model
from perforated.graph.networks import NETWORKS, perforable_layers
from perforated.graph.plan import PerforationPlan

from cases import MODEL_INPUT as INPUT, MODEL_ROWS as ROWS

def manual_forward(model: Model, x: np.ndarray) -> np.ndarray:
    """The same network composed from the functional API with explicit interpolation."""
    w = model.params
    m1, m2 = model.masks.get("c1"), model.masks.get("c2")
    y = P.conv2d(x, w["c1"]["weight"], w["c1"]["bias"], pad=1, mask=m1)
    y = P.relu(y)
    y = P.relu(P.conv2d(y, w["p1"]["weight"], w["p1"]["bias"]))
    y = P.lrn(y, 3, 1e-2, 0.75, 1.0)
    y = P.max_pool2d(y, 3, 2)
    y = P.relu(P.conv2d(y, w["c2"]["weight"], w["c2"]["bias"], pad=1, groups=2, mask=m2))
    return P.linear(np.ascontiguousarray(y.reshape(y.shape[0], -1)), w["fc"]["weight"], w["fc"]["bias"])


def small_model(masks=None, seed=0) -> Model:
    return Model(ROWS, 3, masks=masks, input_shape=INPUT, classes=5, seed=seed)


@pytest.mark.parametrize("kind", [None, "uniform", "grid"])
def test_compact_forward_equals_explicit_interpolation(rng, kind):
    masks = None
    if kind:
        masks = {"c1": P.make_mask(kind, (9, 11), 0.6, seed=2), "c2": P.make_mask(kind, (4, 5), 0.5, seed=3)}
    model = small_model(masks)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    got = model.forward(x).copy()
    np.testing.assert_allclose(got, manual_forward(model, x), rtol=1e-4, atol=1e-5)
    if kind:  # the compact path really is compact
        assert model.steps[0].y.shape == (3, 6, masks["c1"].count)


def numeric_grad(model, x, labels, name, key, index, eps=1e-2):
    arr = model.params[name][key]
    old = float(arr[index])
    arr[index] = old + eps
    model.forward(x)
    plus = float(model.loss(labels)[0].mean())
    arr[index] = old - eps
    model.forward(x)
    minus = float(model.loss(labels)[0].mean())
    arr[index] = old
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("perforated", [False, True])
def test_backward_matches_finite_differences(rng, perforated):
    masks = {"c1": P.make_mask("uniform", (9, 11), 0.5, seed=1)} if perforated else None
    model = small_model(masks, seed=4)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    labels = np.array([0, 3, 4])
    model.forward(x)
    model.loss(labels)
    model.backward(labels)
    for name, key in [("c1", "weight"), ("c1", "bias"), ("p1", "weight"), ("c2", "weight"), ("fc", "weight")]:
        grad = model.params.grads[name][key]
        index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        num = numeric_grad(model, x, labels, name, key, index)
        assert abs(num - grad[index]) <= 0.05 * abs(num) + 1e-3, (name, key, num, grad[index])


def fractional_model(seed=0):
    """ROWS with c1 a fractional-stride conv: its grid's rows x cols are the map the next layers see."""
    rows = [(k, n, dict(p, fractional=True) if n == "c1" else p) for k, n, p in ROWS]
    mask = P.make_mask("grid", (9, 11), 0.6, seed=2)
    return Model(rows, 3, masks={"c1": mask}, input_shape=INPUT, classes=5, seed=seed), mask


def test_fractional_stride_reads_the_grid_as_a_smaller_map(rng):
    model, mask = fractional_model()
    gh, gw = P.grid_shape(mask)
    assert gh * gw == mask.count and (gh, gw) != (9, 11)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    got = model.forward(x).copy()
    w = model.params
    rows, cols = np.unique(mask.indices // 11), np.unique(mask.indices % 11)
    y = P.conv2d(x, w["c1"]["weight"], w["c1"]["bias"], pad=1)[:, :, rows][:, :, :, cols]  # no interpolation
    y = P.relu(P.conv2d(P.relu(np.ascontiguousarray(y)), w["p1"]["weight"], w["p1"]["bias"]))
    y = P.max_pool2d(P.lrn(y, 3, 1e-2, 0.75, 1.0), 3, 2)
    y = P.relu(P.conv2d(y, w["c2"]["weight"], w["c2"]["bias"], pad=1, groups=2))
    want = P.linear(np.ascontiguousarray(y.reshape(3, -1)), w["fc"]["weight"], w["fc"]["bias"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert model.output_sizes()["c2"] == ((gh - 3) // 2 + 1, (gw - 3) // 2 + 1)


def test_fractional_stride_backward_matches_finite_differences(rng):
    model, _ = fractional_model(seed=4)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    labels = np.array([0, 3, 4])
    model.forward(x)
    model.loss(labels)
    model.backward(labels)
    for name, key in [("c1", "weight"), ("c1", "bias"), ("fc", "weight")]:
        grad = model.params.grads[name][key]
        index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        num = numeric_grad(model, x, labels, name, key, index)
        assert abs(num - grad[index]) <= 0.05 * abs(num) + 1e-3, (name, key, num, grad[index])


def test_fractional_stride_needs_a_grid_mask_on_a_full_map():
    rows = [(k, n, dict(p, fractional=True) if n == "c1" else p) for k, n, p in ROWS]
    with pytest.raises(ValueError, match="grid_shape: .*product set.*'uniform'"):
        Model(rows, 1, masks={"c1": P.make_mask("uniform", (9, 11), 0.6, seed=2)}, input_shape=INPUT, classes=5)
    plan = PerforationPlan("nin", {"conv1": {"kind": "grid", "rate": 0.6}})
    with pytest.raises(ValueError, match="fractional-stride convs takes its grid masks as masks="):
        Model(rows, 1, plan=plan, input_shape=INPUT, classes=5)
    rows = [(k, n, dict(p, fractional=True) if n == "p1" else p) for k, n, p in ROWS]  # 1x1 after c1
    with pytest.raises(ValueError, match="'p1' is marked fractional but reads a compact tensor"):
        Model(rows, 1, masks={"c1": P.make_mask("grid", (9, 11), 0.6, seed=2)}, input_shape=INPUT, classes=5)


def test_dropout_only_in_training(rng):
    model = small_model()
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    a = model.forward(x).copy()
    np.testing.assert_array_equal(model.forward(x), a)  # inference: deterministic
    b = model.forward(x, training=True).copy()
    assert not np.allclose(a, b)


def test_multiply_adds_match_spec():
    # SPEC §7: NIN 2.22e8, AlexNet 7.24e8 (legacy counter 0.52e9, quirk Q2), VGG-16 1.547e10.
    assert Model("nin", 1).multiply_adds() == pytest.approx(2.22e8, rel=5e-3)  # 2.2249e8
    alex = Model("alexnet", 1)
    assert alex.multiply_adds() == pytest.approx(7.24e8, rel=2e-3)
    assert alex.multiply_adds(legacy=True) == pytest.approx(0.52e9, rel=1e-2)
    assert Model("vgg16", 1).multiply_adds() == pytest.approx(1.547e10, rel=2e-3)


def test_perforation_reduces_multiplications_and_memory():
    dense = Model("nin", 2)
    perf = Model("nin", 2, plan=PerforationPlan.uniform_rate("nin", 0.75))
    # conv1..conv3 and the cccp layers after them all run on a quarter of the positions
    assert dense.multiply_adds() / perf.multiply_adds() == pytest.approx(4.0, rel=0.01)
    assert dense.activation_bytes() / perf.activation_bytes() > 2.5
    assert perf.conv_count() == dense.conv_count() == 9


def test_perforable_layers_follow_spec():
    assert perforable_layers(NETWORKS["nin"]["layers"]()) == ["conv1", "conv2", "conv3"]
    assert perforable_layers(NETWORKS["alexnet"]["layers"]()) == [f"conv{i}" for i in range(1, 6)]
    assert len(perforable_layers(NETWORKS["vgg16"]["layers"]())) == 13


def test_plan_json_round_trip_and_apply(tmp_path):
    plan = PerforationPlan("nin", {"conv1": {"kind": "grid", "rate": 0.5, "seed": 3},
                                   "conv2": {"kind": "pooling", "rate": 2 / 3},
                                   "conv3": {"kind": "uniform", "rate": 0.75, "seed": 1}})
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = PerforationPlan.load(path)
    assert loaded.to_dict() == plan.to_dict()
    model = Model("nin", 2, plan=path)
    assert set(model.masks) == {"conv1", "conv2", "conv3"}
    assert model.masks["conv1"].kind == "grid" and model.masks["conv2"].shape == (16, 16)
    np.testing.assert_array_equal(model.masks["conv3"].indices,
                                  P.make_mask("uniform", (8, 8), 0.75, seed=1).indices)


def test_plan_impact_scores_file(tmp_path):
    scores = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    np.savez(tmp_path / "impact.npz", conv2=scores)
    (tmp_path / "plan.json").write_text(json.dumps(
        {"network": "nin", "layers": {"conv2": {"kind": "impact", "rate": 0.5, "scores": "impact.npz"}}}))
    model = Model("nin", 1, plan=tmp_path / "plan.json")
    kept = model.masks["conv2"].indices
    assert scores.ravel()[kept].min() >= np.delete(scores.ravel(), kept).max()


@pytest.mark.parametrize("layers,message", [
    ({"cccp1": {"rate": 0.5}}, "not perforable"),
    ({"conv1": {"rate": 1.0}}, "rate must be a number in [0, 1)"),
    ({"conv1": {"kind": "zigzag", "rate": 0.5}}, "kind must be one of"),
])
def test_plan_validation(layers, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        PerforationPlan("nin", layers)


def test_plan_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no plan file"):
        PerforationPlan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PerforationPlan.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="network must be one of"):
        PerforationPlan("resnet")


def test_weights_round_trip(tmp_path, rng):
    a, b = small_model(seed=1), small_model(seed=2)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    assert not np.allclose(a.forward(x), b.forward(x))
    a.save_weights(tmp_path / "w.npz")
    b.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    other = Model("nin", 1)
    with pytest.raises(ValueError, match="missing|shape"):
        other.load_weights(tmp_path / "w.npz")


def test_model_argument_errors():
    with pytest.raises(ValueError, match="network must be one of"):
        Model("lenet", 1)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        Model("nin", 0)
    with pytest.raises(ValueError, match="input_shape and classes"):
        Model(ROWS, 1)
    with pytest.raises(ValueError, match="unknown conv layers"):
        Model("nin", 1, masks={"conv9": P.make_mask("uniform", (8, 8), 0.5)})
    with pytest.raises(ValueError, match="x must have shape"):
        Model("nin", 2).forward(np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.parametrize("inference", ["nhwc", "layers"])
def test_forward_returns_a_new_array_each_call(rng, inference):
    m = Model(ROWS, 2, input_shape=INPUT, classes=5, inference=inference)
    x1, x2 = (rng.standard_normal((2,) + INPUT).astype(np.float32) for _ in range(2))
    y1 = m.forward(x1)
    kept = y1.copy()
    y2 = m.forward(x2)
    assert y1 is not y2 and not np.shares_memory(y1, m.logits) and not np.shares_memory(y2, m.logits)
    np.testing.assert_array_equal(y1, kept)  # the second call left the first result alone
    np.testing.assert_array_equal(y2, m.logits)
    assert not np.array_equal(y1, y2)


def test_model_from_given_weights_draws_no_random_weights(monkeypatch):
    src = Model("nin", 1, seed=3)

    def no_draws(*args, **kwargs):
        raise AssertionError("random weights drawn although weights were given")

    monkeypatch.setattr(np.random, "default_rng", no_draws)
    m = Model("nin", 4, weights=src.params, seed=5)  # another batch size, the same weights
    for name, p in src.params.items():
        for key, value in p.items():
            np.testing.assert_array_equal(m.params[name][key], value)


def test_with_batch_shares_parameters_without_copying():
    plan = PerforationPlan.uniform_rate("nin", 0.5, kind="grid")
    m2 = Model("nin", batch=2, plan=plan, seed=4)
    m3 = m2.with_batch(3)
    assert m3.batch == 3 and m3.plan is plan and set(m3.masks) == set(m2.masks)
    for name, p in m2.params.items():
        assert m3.params[name]["weight"] is p["weight"] and m3.params[name]["bias"] is p["bias"]
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(m3.forward(x)[:2], m2.forward(x[:2]), rtol=1e-5, atol=1e-6)
    before = m3.forward(x)
    m2.params["conv1"]["weight"] *= 0.5  # shared: the other model sees it
    after = m3.forward(x)
    assert not np.allclose(before, after, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(after[:2], m2.forward(x[:2]), rtol=1e-5, atol=1e-6)


def test_shared_params_must_fit_the_network():
    nin = Model("nin", batch=1)
    rows = [("conv", "conv1", dict(out=7, kernel=3, pad=1)), ("pool", "pool", dict(mode="avg", global_=True))]
    with pytest.raises(ValueError, match=r"shared parameters 'conv1' have shape \(192, 3, 5, 5\), the network needs \(7, 3, 3, 3\)"):
        Model(rows, 1, input_shape=(3, 32, 32), classes=7, shared_params=nin.params)
