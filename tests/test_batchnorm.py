"""Batch normalisation (a training aid): the C kernels against a float64 reference and finite
differences, argument errors, folding into the conv, identity calibration, SGD and resumable training.
The CUDA twins are tested in tests/test_cuda.py (functions, _ctx dispatch) and tests/test_cuda_model.py
(a batch-normalised model on the device code paths)."""
from __future__ import annotations

import numpy as np
import pytest

import perforated as P
from helpers import assert_close, assert_same_params, randn
from cases import TINY_ROWS
from perforated.ops import batchnorm as BN
from perforated.train import sgd as tr
from perforated.graph.model import Model

def _reference(x, gamma, beta, eps=BN.EPS):
    x = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axes), x.var(axes)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)
    return y, mean, var


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 5, 7), (1, 2, 1, 1), (3, 4, 300)])
def test_forward_train_matches_reference(rng, shape):
    x = randn(rng, *shape) * 3 + 50  # a large mean: the variance must not cancel away
    gamma, beta = randn(rng, shape[1]), randn(rng, shape[1])
    y, mean, invstd = BN.forward_train(x, gamma, beta)
    ref, rmean, rvar = _reference(x, gamma, beta)
    assert_close(y, ref, rtol=1e-4, atol=1e-5, what="y")
    assert_close(mean, rmean, rtol=1e-6, atol=1e-6, what="mean")
    assert_close(invstd, 1 / np.sqrt(rvar + BN.EPS), rtol=1e-4, atol=1e-6, what="invstd")


def test_backward_matches_finite_differences(rng):
    x, dy = randn(rng, 3, 2, 4, 3) * 2 + 1, randn(rng, 3, 2, 4, 3)
    gamma, beta = randn(rng, 2), randn(rng, 2)
    _, mean, invstd = BN.forward_train(x, gamma, beta)
    dx, dgamma, dbeta = BN.backward(x, dy, gamma, mean, invstd)

    def objective(xx, gg):
        return float((_reference(xx, gg, beta)[0] * dy).sum())

    eps = 1e-5
    num = np.zeros(x.shape)
    x64 = x.astype(np.float64)
    for i in np.ndindex(x.shape):
        hi, lo = x64.copy(), x64.copy()
        hi[i] += eps
        lo[i] -= eps
        num[i] = (objective(hi, gamma) - objective(lo, gamma)) / (2 * eps)
    assert_close(dx, num, rtol=1e-3, atol=1e-4, what="dx")
    num_g = [(objective(x64, gamma + eps * e) - objective(x64, gamma - eps * e)) / (2 * eps) for e in np.eye(2)]
    assert_close(dgamma, np.array(num_g), rtol=1e-3, atol=1e-4, what="dgamma")
    assert_close(dbeta, dy.astype(np.float64).sum((0, 2, 3)), rtol=1e-5, atol=1e-5, what="dbeta")
    in_place = dy.copy()
    BN.backward(x, in_place, gamma, mean, invstd, out=in_place)
    np.testing.assert_array_equal(in_place, dx)


def test_inference_and_fold_agree(rng):
    x, w, b = randn(rng, 2, 4, 3, 3), randn(rng, 4, 2, 1, 1), randn(rng, 4)
    gamma, beta, mean = randn(rng, 4), randn(rng, 4), randn(rng, 4)
    var = np.abs(randn(rng, 4)) + 0.1
    y = BN.forward_inference(x, gamma, beta, mean, var)
    scale = gamma / np.sqrt(var + BN.EPS)
    assert_close(y, (x - mean[:, None, None]) * scale[:, None, None] + beta[:, None, None], what="inference")
    fw, fb = BN.fold(w, b, gamma, beta, mean, var)
    assert_close(fw, w * scale[:, None, None, None], what="folded weight")
    assert_close(fb, (b - mean) * scale + beta, what="folded bias")
    np.testing.assert_array_equal(BN.forward_inference(x, gamma, beta, mean, var, out=x.copy()), y)


def test_errors_name_the_argument(rng):
    x, c = randn(rng, 2, 3, 4), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="out must not overlap x"):
        BN.forward_train(x, c, c, out=x)
    with pytest.raises(ValueError, match=r"eps must be finite and > 0, got 0"):
        BN.forward_train(x, c, c, eps=0.0)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        BN.forward_train(x, np.ones(4, np.float32), c)
    with pytest.raises(ValueError, match=r"var\[1\] must be >= 0, got -1"):
        BN.forward_inference(x, c, c, c, np.array([1, -1, 1], np.float32))
    with pytest.raises(TypeError, match="x must be float32, got float64"):
        BN.forward_train(x.astype(np.float64), c, c)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 3, 4\)"):
        BN.backward(x, randn(rng, 2, 3, 5), c, c, c)


def test_model_fold_and_calibration(rng):
    m = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, seed=1, batchnorm=True)
    assert [s.name for s in m.steps if s.kind == "batchnorm"] == ["c1_bn", "c2_bn"]  # not after the last conv
    x, y = randn(rng, 4, 3, 6, 6), np.array([0, 1, 2, 1])
    for _ in range(3):  # moves the running statistics and gamma, beta
        m.forward(x, training=True)
        m.loss(y)
        m.backward(y)
        tr.SGD(m, 0.0, 0.0).step(0.1)
    plain = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, weights=m.deploy_params())
    assert_close(plain.forward(x), m.forward(x, training=False), rtol=1e-4, atol=1e-5, what="folded network")
    assert m.multiply_adds() == plain.multiply_adds()

    other = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, seed=7)
    warm = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, batchnorm=True, weights=other.deploy_params())
    warm.calibrate_batchnorm(x)
    assert_close(warm.forward(x, training=False), other.forward(x), rtol=1e-4, atol=1e-5, what="calibrated")
    assert_close(warm.forward(x, training=True), other.forward(x), rtol=1e-4, atol=1e-5, what="batch stats")


def test_sgd_skips_weight_decay_on_gamma(rng):
    m = Model(TINY_ROWS, 2, input_shape=(3, 6, 6), classes=3, seed=1, batchnorm=True)
    sgd = tr.SGD(m, momentum=0.0, weight_decay=0.5)
    before = {n: {k: v.copy() for k, v in p.items()} for n, p in m.params.items()}
    for g in m.params.grads.values():
        for v in g.values():
            v[...] = 0
    sgd.step(1.0)
    np.testing.assert_array_equal(m.params["c1_bn"]["weight"], before["c1_bn"]["weight"])
    np.testing.assert_allclose(m.params["c1"]["weight"], 0.5 * before["c1"]["weight"], rtol=1e-6)


def test_batchnorm_is_not_cpu_only(rng):
    """The CUDA twins exist (tests/test_cuda.py, tests/test_cuda_model.py): training on CUDA with
    batchnorm is a valid config, and numpy arrays take a CPU context (not a CUDA one)."""
    tr.TrainConfig(batchnorm=True, device="cuda").check()
    x, c = randn(rng, 2, 3, 4), np.ones(3, np.float32)
    np.testing.assert_array_equal(BN.forward_train(x, c, c, context=P.Context("cpu"))[0], BN.forward_train(x, c, c)[0])
    with pytest.raises(TypeError, match=r"batchnorm.forward_train: numpy arrays run on the CPU"):
        BN.forward_train(x, c, c, context="cuda")


def test_training_with_batchnorm_resumes_and_saves_the_plain_network(tmp_path, rng):
    splits = {"train": tr.Split(rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 8),
                                [str(i) for i in range(10)]),
              "test": tr.Split(rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4),
                               [str(i) for i in range(10)])}
    start = tmp_path / "start.npz"
    Model("nin", 4, seed=9).save_weights(start)
    cfg = tr.TrainConfig(network="nin", epochs=2, batch=4, lr=0.01, seed=3, batchnorm=True, weights=str(start))
    full = tr.train(cfg, tmp_path / "a", splits=splits, stream=None)
    tr.train(cfg, tmp_path / "b", splits=splits, stream=None, stop_after=1)
    resumed = tr.train(cfg, tmp_path / "b", resume=True, splits=splits, stream=None)
    assert_same_params(resumed["model"].params, full["model"].params)
    running = [s.running["var"] for s in full["model"].steps if s.kind == "batchnorm"]
    assert running and not np.allclose(running[0], 1.0)
    plain = Model("nin", 4, weights=tmp_path / "a" / "weights.npz")  # the folded, plain NIN
    x = full["preprocess"](splits["test"].images)
    assert_close(plain.forward(x), full["model"].forward(x, training=False), rtol=1e-3, atol=1e-4,
                 what="saved weights = the trained network")


def test_model_backward_with_batchnorm_matches_finite_differences(rng):
    """Training-mode gradients of a normalised model (batch statistics) against central differences."""
    m = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, seed=2, batchnorm=True)
    x, labels = randn(rng, 4, 3, 6, 6), np.array([0, 1, 2, 1])
    for n in m.params.batchnorms:  # away from the identity, so gamma and beta matter
        m.params[n]["weight"][...] = rng.uniform(0.5, 2.0, m.params[n]["weight"].shape)
        m.params[n]["bias"][...] = randn(rng, *m.params[n]["bias"].shape)

    def loss() -> float:
        m.forward(x, training=True)
        return float(m.loss(labels)[0].astype(np.float64).mean())

    loss()
    m.backward(labels)
    for name, key in [("c1", "weight"), ("c1_bn", "weight"), ("c1_bn", "bias"), ("c2", "weight"),
                      ("c2_bn", "bias"), ("c3", "weight")]:
        grad = m.params.grads[name][key].copy()
        index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        arr, eps = m.params[name][key], 1e-3  # small: a shift of a whole channel moves many ReLU inputs
        old = float(arr[index])
        arr[index] = old + eps
        plus = loss()
        arr[index] = old - eps
        minus = loss()
        arr[index] = old
        num = (plus - minus) / (2 * eps)
        assert abs(num - grad[index]) <= 0.05 * abs(num) + 1e-3, (name, key, num, grad[index])


def _bn_inputs(m, xs):
    """Each normalisation's input over the batches xs, as (channels, values), from training forwards
    (batch statistics; the tiny network has no dropout, so they equal the statistics-gathering ones)."""
    seen = {}
    for x in xs:
        m.forward(x, training=True)
        for s in m.steps:
            if s.kind == "batchnorm":
                c = s.x.shape[1]
                seen.setdefault(s.name, []).append(np.moveaxis(s.x, 1, 0).reshape(c, -1).astype(np.float64))
    return {k: np.concatenate(v, axis=1) for k, v in seen.items()}


def test_recomputed_statistics_pool_every_batch_exactly(rng):
    m = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, seed=1, batchnorm=True)
    y = np.array([0, 1, 2, 1])
    for _ in range(3):  # running averages that differ from any batch's statistics
        m.forward(randn(rng, 4, 3, 6, 6), training=True)
        m.loss(y)
        m.backward(y)
        tr.SGD(m, 0.0, 0.0).step(0.1)
    xs = [randn(rng, 4, 3, 6, 6) + i for i in range(3)]  # batches with different means
    expected = _bn_inputs(Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, batchnorm=True,
                                weights={n: dict(p) for n, p in m.params.items()}), xs)
    assert m.recompute_batchnorm_statistics(iter(xs)) == 3
    for s in m.steps:
        if s.kind == "batchnorm":
            v = expected[s.name]
            assert_close(s.running["mean"], v.mean(axis=1), rtol=1e-4, atol=1e-5, what=s.name + " mean")
            assert_close(s.running["var"], v.var(axis=1, ddof=1), rtol=1e-4, atol=1e-5, what=s.name + " var")
            assert not s.collect
    before = {s.name: s.running["var"].copy() for s in m.steps if s.kind == "batchnorm"}
    assert m.recompute_batchnorm_statistics(iter([])) == 0  # no batches: nothing changes
    for s in m.steps:
        if s.kind == "batchnorm":
            np.testing.assert_array_equal(s.running["var"], before[s.name])
    plain = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3)
    assert plain.recompute_batchnorm_statistics(iter(xs)) == 0


def test_recomputed_statistics_are_taken_with_dropout_off(rng):
    with_dropout = TINY_ROWS[:2] + [("dropout", "d1", dict(ratio=0.5))] + TINY_ROWS[2:]
    a = Model(with_dropout, 4, input_shape=(3, 6, 6), classes=3, seed=1, batchnorm=True)
    b = Model(TINY_ROWS, 4, input_shape=(3, 6, 6), classes=3, batchnorm=True,
              weights={n: dict(p) for n, p in a.params.items()})
    xs = [randn(rng, 4, 3, 6, 6) for _ in range(2)]
    a.recompute_batchnorm_statistics(iter(xs))
    b.recompute_batchnorm_statistics(iter(xs))
    for sa, sb in zip([s for s in a.steps if s.kind == "batchnorm"], [s for s in b.steps if s.kind == "batchnorm"]):
        np.testing.assert_array_equal(sa.running["var"], sb.running["var"])


def test_training_recomputes_the_statistics_at_each_epoch_end(tmp_path, rng):
    splits = {"train": tr.Split(rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 12),
                                [str(i) for i in range(10)])}
    start = tmp_path / "start.npz"
    Model("nin", 4, seed=9).save_weights(start)
    cfg = tr.TrainConfig(network="nin", epochs=1, batch=4, lr=0.01, seed=3, batchnorm=True, weights=str(start),
                         bn_recompute=2)
    result = tr.train(cfg, tmp_path / "a", splits=splits, stream=None)
    model = result["model"]
    assert "statistics recomputed on 2 x 4 training images" in (tmp_path / "a" / "train.log").read_text()
    # the same two un-augmented batches give the same statistics again
    fixed = tr.batches(splits["train"], 4, result["preprocess"], np.random.default_rng(cfg.seed + 2), shuffle=True,
                       last="drop")
    stats = [s.running["var"].copy() for s in model.steps if s.kind == "batchnorm"]
    model.recompute_batchnorm_statistics(b.x for b, _ in zip(fixed, range(2)))
    for before, s in zip(stats, [s for s in model.steps if s.kind == "batchnorm"]):
        np.testing.assert_array_equal(before, s.running["var"])
    off = tr.train(tr.TrainConfig(**dict(vars(cfg), bn_recompute=0)), tmp_path / "b", splits=splits, stream=None)
    assert "recomputed" not in (tmp_path / "b" / "train.log").read_text()
    assert not np.array_equal(stats[0], [s for s in off["model"].steps if s.kind == "batchnorm"][0].running["var"])
    with pytest.raises(ValueError, match="bn_recompute must be >= 0"):
        tr.TrainConfig(bn_recompute=-1).check()
