"""Impact estimation (SPEC §4.4) against a closed form, and its nesting on perforated networks."""
import numpy as np
import pytest

import perforated as P
from perforated.search.impact import estimate_impact
from perforated.graph.model import Model

# conv (no ReLU) -> global average: logits[c] = mean_p V[c, p], so dL/dV[c, p] = (prob_c - onehot_c) / P
ROWS = [("conv", "c1", dict(out=4, kernel=3, pad=1)), ("pool", "gap", dict(mode="avg", global_=True))]


def closed_form(model, x, labels):
    v = P.conv2d(x, model.params["c1"]["weight"], model.params["c1"]["bias"], pad=1).astype(np.float64)
    n, c, h, w = v.shape
    logits = v.mean(axis=(2, 3))
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    grad = (prob - np.eye(c)[labels])[:, :, None, None] / (h * w)
    return np.abs(grad * v).sum(axis=1).mean(axis=0)


@pytest.mark.parametrize("n_images", [6, 7])  # 7: a padded last batch
def test_impact_matches_closed_form(rng, n_images):
    model = Model(ROWS, 3, input_shape=(2, 5, 6), classes=4, seed=1)
    x = rng.standard_normal((n_images, 2, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 4, n_images)
    got = estimate_impact(model, x, labels)["c1"]
    np.testing.assert_allclose(got, closed_form(model, x, labels), rtol=1e-4, atol=1e-9)


def test_impact_is_zero_at_perforated_positions_and_gives_nested_masks(rng):
    x = rng.standard_normal((4, 2, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 4)
    dense = Model(ROWS, 4, input_shape=(2, 5, 6), classes=4, seed=1)
    g0 = estimate_impact(dense, x, labels)["c1"]
    first = P.make_mask("impact", (5, 6), 0.5, scores=g0.astype(np.float32))
    perf = Model(ROWS, 4, input_shape=(2, 5, 6), classes=4, seed=1, masks={"c1": first})
    g1 = estimate_impact(perf, x, labels)["c1"]
    perforated_positions = np.setdiff1d(np.arange(30), first.indices)
    assert np.all(g1.ravel()[perforated_positions] == 0)
    second = P.make_mask("impact", (5, 6), 0.75, scores=g1.astype(np.float32))
    assert set(second.indices) <= set(first.indices)  # iterative impact: masks are nested


def test_impact_argument_errors(rng):
    model = Model(ROWS, 2, input_shape=(2, 5, 6), classes=4)
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="no conv layers named"):
        estimate_impact(model, x, np.array([0, 1]), ["conv9"])
    with pytest.raises(ValueError, match="as many labels as images"):
        estimate_impact(model, x, np.array([0]))
