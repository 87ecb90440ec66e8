"""Low-rank decompositions (SPEC §10): exactness at full rank, error falling with rank, rank selection
under its budget, plans as JSON, and a decomposed + perforated NIN whose multiply-adds match the theory."""
from __future__ import annotations

import json

import numpy as np
import pytest

import perforated as P
from perforated.search import lowrank as LR
from perforated.graph.model import Model, pair
from perforated.graph.networks import NETWORKS


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# (out, in, kh, kw, stride, pad, groups): odd sizes, non-square kernels and strides, groups 2
CONVS = [(8, 6, 3, 3, 1, 1, 1), (10, 6, 5, 3, 2, (2, 1), 2), (5, 7, 3, 5, (2, 1), 0, 1)]


@pytest.mark.parametrize("shape", CONVS)
def test_spatial_full_rank_exact_and_error_falls(rng, shape):
    n, c, kh, kw, s, pad, g = shape
    x = rng.standard_normal((2, c, 13, 17)).astype(np.float32)
    w = rng.standard_normal((n, c // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    y = P.conv2d(x, w, b, stride=s, pad=pad, groups=g)
    (sh, sw), (ph, pw) = pair(s), pair(pad)
    kmax = min(c // g * kh, n // g * kw)
    errors = []
    for k in range(1, kmax + 1):
        wv, bv, wh, bh = LR.spatial_decompose(w, b, k, g)
        assert wv.shape == (g * k, c // g, kh, 1) and wh.shape == (n, k, 1, kw)
        z = P.conv2d(x, wv, bv, stride=(sh, 1), pad=(ph, 0), groups=g)
        errors.append(_rel(P.conv2d(z, wh, bh, stride=(1, sw), pad=(0, pw), groups=g), y))
    assert errors[-1] < 1e-5
    assert all(e2 <= e1 + 1e-6 for e1, e2 in zip(errors, errors[1:]))
    assert errors[0] > 0.1


@pytest.mark.parametrize("shape", CONVS)
def test_channel_full_rank_exact_and_error_falls(rng, shape):
    n, c, kh, kw, s, pad, g = shape
    x = rng.standard_normal((2, c, 13, 17)).astype(np.float32)
    w = rng.standard_normal((n, c // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    y = P.conv2d(x, w, b, stride=s, pad=pad, groups=g)
    responses = y.transpose(0, 2, 3, 1).reshape(-1, n)
    errors = []
    for k in range(1, n // g + 1):
        wa, ba, wb, bb = LR.channel_decompose(w, b, k, responses, g)
        assert wa.shape == (g * k, c // g, kh, kw) and wb.shape == (n, k, 1, 1)
        z = P.conv2d(x, wa, ba, stride=s, pad=pad, groups=g)
        approx = P.conv2d(z, wb, bb, groups=g)
        errors.append(_rel(approx, y))
        # the mean response is preserved at every rank (bias of the 1x1 part)
        assert np.allclose(approx.mean(axis=(0, 2, 3)), y.mean(axis=(0, 2, 3)), atol=1e-3 * np.abs(y).max())
    assert errors[-1] < 1e-5
    assert all(e2 <= e1 + 1e-6 for e1, e2 in zip(errors, errors[1:]))


def test_fc_full_rank_exact_and_error_falls(rng):
    w = rng.standard_normal((19, 23)).astype(np.float32)
    b = rng.standard_normal(19).astype(np.float32)
    x = rng.standard_normal((5, 23)).astype(np.float32)
    y = P.linear(x, w, b)
    errors = []
    for k in range(1, 20):
        wa, ba, wb, bb = LR.fc_decompose(w, b, k)
        assert wa.shape == (k, 23) and wb.shape == (19, k)
        errors.append(_rel(P.linear(P.linear(x, wa, ba), wb, bb), y))
    assert errors[-1] < 1e-5
    assert all(e2 <= e1 + 1e-6 for e1, e2 in zip(errors, errors[1:]))


def test_rank_checks():
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"rank must be an int in \[1, 9\]"):
        LR.spatial_decompose(w, np.zeros(4, np.float32), 10)
    with pytest.raises(ValueError, match="groups must divide"):
        LR.spatial_decompose(w, np.zeros(4, np.float32), 1, groups=3)
    with pytest.raises(ValueError, match="rank must be an int"):
        LR.fc_decompose(np.zeros((3, 5), np.float32), np.zeros(3, np.float32), 4)


def test_select_ranks_meets_budget_and_prefers_low_energy_loss():
    layers = {
        "steep": dict(energy=0.5 ** np.arange(20), unit=10, orig=150, kmax=20),   # energy in few ranks
        "flat": dict(energy=np.ones(20), unit=10, orig=150, kmax=20),
    }
    ranks = LR.select_ranks(layers, 120)
    cost = sum(layers[n]["orig"] if r is None else r * layers[n]["unit"] for n, r in ranks.items())
    assert cost <= 120
    assert ranks["steep"] is not None and (ranks["flat"] is None or ranks["flat"] > ranks["steep"])
    with pytest.raises(ValueError, match="cannot be met"):
        LR.select_ranks(layers, 5)


@pytest.mark.parametrize("method", ["spatial", "channel"])
@pytest.mark.parametrize("ratio,rate", [(2.0, 0.0), (3.0, 0.0), (2.5, 0.3)])
def test_plan_for_ratio_meets_budget(method, ratio, rate):
    plan = LR.plan_for_ratio("nin", ratio, method, rate=rate)
    dense, new = plan.multiply_adds()
    assert new <= dense / ratio
    assert plan.theoretical_speedup() < ratio * 1.1  # no needless overshoot
    assert any(s.get("rank") for s in plan.layers.values())


def test_rank_selection_uses_each_layers_own_kernel_and_channels():
    # Q7: per-layer k and c. AlexNet conv1 (3 inputs, 11x11) and conv3 (256 inputs, 3x3) differ in cost
    # per rank; the reference used the last layer's for every layer.
    rows, shape = NETWORKS["alexnet"]["layers"](), NETWORKS["alexnet"]["input"]
    _, geo = LR.layer_costs(rows, shape)
    p1, p3 = dict((n, p) for _, n, p in rows)["conv1"], dict((n, p) for _, n, p in rows)["conv3"]
    assert LR.decomposed_cost("conv", p1, geo["conv1"], "spatial", 1) == 55 * 227 * 3 * 11 + 55 * 55 * 96 * 11
    assert LR.decomposed_cost("conv", p3, geo["conv3"], "spatial", 1) == 13 * 13 * 256 * 3 + 13 * 13 * 384 * 3


def test_plan_json_round_trip(tmp_path):
    plan = LR.plan_for_ratio("nin", 2.0, "channel", rate=0.25, mask_kind="grid")
    path = tmp_path / "plan.json"
    plan.save(path)
    data = json.loads(path.read_text())
    assert data["network"] == "nin" and abs(data["theoretical_speedup"] - plan.theoretical_speedup()) < 1e-3
    again = LR.LowRankPlan.load(path)
    assert again.layers == plan.layers and again.theoretical_speedup() == plan.theoretical_speedup()
    data["layers"]["conv2"]["rank"] = 10_000
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"layers.conv2.rank must be an int in \[1, 192\]"):
        LR.LowRankPlan.load(path)
    with pytest.raises(ValueError, match="not perforable"):
        LR.LowRankPlan("nin", {"cccp1": {"rate": 0.5}})
    with pytest.raises(ValueError, match="no spatial decomposition"):
        LR.LowRankPlan("nin", {"cccp1": {"rank": 3, "method": "spatial"}})


@pytest.mark.parametrize("shape", CONVS)
def test_asymmetric_channel_fit_corrects_a_distorted_input(rng, shape):
    """The asymmetric fit gets closer to the original responses from a distorted input's responses: at
    every rank no worse on its samples than the symmetric fit (one of the rank-K maps the reduced-rank
    regression minimises over), and clearly better at full rank (where the symmetric fit is the
    identity and corrects nothing)."""
    n, c, kh, kw, s, pad, g = shape
    x = rng.standard_normal((2, c, 13, 17)).astype(np.float32)
    w = rng.standard_normal((n, c // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    mix = np.eye(c, dtype=np.float32) + 0.3 * rng.standard_normal((c, c)).astype(np.float32)
    x_hat = np.einsum("dc,nchw->ndhw", mix, x).astype(np.float32)  # what earlier approximated layers give
    y = P.conv2d(x, w, b, stride=s, pad=pad, groups=g)
    y_hat = P.conv2d(x_hat, w, b, stride=s, pad=pad, groups=g)
    flat = lambda t: t.transpose(0, 2, 3, 1).reshape(-1, n)

    def error(k, approx_responses):
        wa, ba, wb, bb = LR.channel_decompose(w, b, k, flat(y), g, approx_responses)
        z = P.conv2d(x_hat, wa, ba, stride=s, pad=pad, groups=g)
        return _rel(P.conv2d(z, wb, bb, groups=g), y)

    for k in range(1, n // g + 1):
        assert error(k, flat(y_hat)) <= error(k, None) + 1e-5
    assert error(n // g, flat(y_hat)) < 0.9 * error(n // g, None)
    with pytest.raises(ValueError, match="approx_responses must have the shape"):
        LR.channel_decompose(w, b, 1, flat(y), g, flat(y_hat)[:-1])


def test_asymmetric_decompose_fits_later_layers_to_the_original(rng):
    """In sequence: the first decomposed layer sees the original input (the same fit either way); the
    next one is fitted on the responses of the network decomposed so far, and ends closer to the
    original network's responses on the fitting images."""
    weights = LR.network_weights("nin", seed=5)
    rows, info = NETWORKS["nin"]["layers"](), NETWORKS["nin"]
    layers = {"conv2": {"rank": 24, "method": "channel"}, "conv3": {"rank": 24, "method": "channel"}}
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    fits = {asym: LR.decompose(rows, weights, layers, info["input"], info["classes"], x, asymmetric=asym)
            for asym in (True, False)}
    assert np.array_equal(fits[True][1]["conv2_a"]["weight"], fits[False][1]["conv2_a"]["weight"])
    assert not np.allclose(fits[True][1]["conv3_a"]["weight"], fits[False][1]["conv3_a"]["weight"])
    ref = LR.layer_responses(rows, weights, info["input"], info["classes"], ["cccp5"], x)["cccp5"]
    err = {asym: _rel(LR.layer_responses(r, w, info["input"], info["classes"], ["cccp5"], x)["cccp5"], ref)
           for asym, (r, w) in fits.items()}
    assert err[True] < err[False]


@pytest.mark.parametrize("method", ["spatial", "channel"])
def test_decomposed_perforated_nin_runs_and_counts(rng, method):
    weights = LR.network_weights("nin", seed=3)
    layers = {"conv1": {"rank": 5, "method": method if method == "channel" else "spatial", "rate": 0.4,
                        "kind": "uniform", "seed": 1},
              "conv2": {"rank": 40, "method": method, "rate": 0.5, "kind": "pooling", "seed": 2},
              "conv3": {"rate": 0.3, "kind": "grid", "seed": 3}}
    plan = LR.LowRankPlan("nin", layers)
    model, new_w = LR.apply_plan(plan, 4, weights)
    dense, macs = plan.multiply_adds()
    assert model.multiply_adds() == macs and dense == Model("nin", 1).multiply_adds()
    a, _ = ("conv2_v", "conv2_h") if method == "spatial" else ("conv2_a", "conv2_b")
    masked = "conv2_h" if method == "spatial" else "conv2_a"
    assert masked in model.masks and a in new_w
    if method == "channel":  # the 1x1 part runs on the compact tensor of the k x k part
        step = next(s for s in model.steps if s.name == "conv2_b")
        assert step.y.shape == (4, 192, model.masks["conv2_a"].count)
    logits = model.forward(rng.standard_normal(model.x.shape).astype(np.float32))
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("method", ["spatial", "channel"])
def test_full_rank_network_matches_original(rng, method):
    weights = LR.network_weights("nin", seed=4)
    # full ranks: spatial min(C*k, N*k) (conv2: 96 inputs, 5x5; conv3: 192 inputs, 3x3), channel N
    full = {"conv2": {"rank": 96 * 5 if method == "spatial" else 192, "method": method},
            "conv3": {"rank": 192 * 3 if method == "spatial" else 192, "method": method}}
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = Model("nin", 2, weights=weights).forward(x).copy()
    model, _ = LR.apply_plan(LR.LowRankPlan("nin", full), 2, weights, images=x)
    assert _rel(model.forward(x), ref) < 1e-4
