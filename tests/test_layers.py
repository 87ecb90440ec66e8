"""Position-wise and dense layers: ReLU, LRN, bias, dropout, fully connected, softmax cross-entropy."""
from __future__ import annotations

import numpy as np
import pytest

import perforated as P
import reference as ref
from helpers import assert_close, nan_array, randn


def fd_check(f, arrays, grads, g, eps=1e-2, rtol=2e-2, atol=2e-2):
    """Central differences of sum(f() * g) (float32 forward, float64 accumulation) vs grads."""
    for arr, grad in zip(arrays, grads):
        num = np.zeros(arr.shape)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            fp = np.vdot(f().astype(np.float64), g)
            arr[i] = old - eps
            fm = np.vdot(f().astype(np.float64), g)
            arr[i] = old
            num[i] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=rtol, atol=atol)


# --- ReLU ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (2, 19, 11), (7,)])
def test_relu(rng, shape):
    x = randn(rng, *shape)
    y = P.relu(x, out=nan_array(*shape))
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = randn(rng, *shape)
    dx = P.relu_backward(y, dy, out=nan_array(*shape))
    np.testing.assert_array_equal(dx, np.where(y > 0, dy, 0))
    # in place
    x2 = x.copy()
    assert P.relu(x2, out=x2) is x2
    np.testing.assert_array_equal(x2, y)


# --- LRN -----------------------------------------------------------------------------------------

LRN_ARGS = [dict(), dict(size=3, alpha=0.5, beta=0.75, k=2.0), dict(size=1, alpha=0.2, beta=0.5, k=1.0),
            dict(size=7, alpha=1e-2, beta=0.6, k=1.0)]


@pytest.mark.parametrize("shape", [(2, 23, 5, 6), (2, 9, 13), (1, 3, 4, 4)])
@pytest.mark.parametrize("args", LRN_ARGS, ids=["caffe_default", "size3", "size1", "size7_wider"])
def test_lrn_matches_reference(rng, shape, args):
    x = randn(rng, *shape) * 3
    y = P.lrn(x, **args, out=nan_array(*shape))
    assert_close(y, ref.lrn(x, **args), rtol=1e-5, atol=1e-5)
    dy = randn(rng, *shape)
    dx = P.lrn_backward(x, y, dy, **args, out=nan_array(*shape))
    assert_close(dx, ref.lrn_backward(x, dy, **args), rtol=1e-4, atol=1e-5)


def test_lrn_compact_equals_full_at_positions(rng):
    """LRN is position-wise: on a compact tensor it equals LRN of the full tensor, gathered."""
    m = P.make_mask("uniform", (6, 7), 0.5, seed=1)
    full = randn(rng, 2, 8, 6, 7) * 3
    compact = np.ascontiguousarray(full.reshape(2, 8, -1)[:, :, m.indices])
    args = dict(size=5, alpha=0.3, beta=0.75, k=1.0)
    np.testing.assert_allclose(P.lrn(compact, **args),
                               P.lrn(full, **args).reshape(2, 8, -1)[:, :, m.indices], rtol=1e-5, atol=1e-6)


def test_lrn_finite_differences(rng):
    x = randn(rng, 1, 6, 2, 2) * 2
    args = dict(size=5, alpha=0.5, beta=0.75, k=2.0)
    g = randn(rng, *x.shape)
    dx = P.lrn_backward(x, P.lrn(x, **args), g, **args)
    fd_check(lambda: P.lrn(x, **args), [x], [dx], g, eps=1e-2, rtol=3e-2, atol=3e-2)


# --- bias ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 19, 7)])
def test_bias(rng, shape):
    x, b = randn(rng, *shape), randn(rng, shape[1])
    want = x + b.reshape((1, -1) + (1,) * (len(shape) - 2))
    y = P.bias_add(x, b)
    assert y is not x
    np.testing.assert_allclose(y, want, rtol=1e-6)
    x2 = x.copy()
    assert P.bias_add(x2, b, out=x2) is x2
    np.testing.assert_allclose(x2, want, rtol=1e-6)
    dy = randn(rng, *shape)
    db = P.bias_backward(dy, out=nan_array(shape[1]))
    assert_close(db, dy.astype(np.float64).sum(axis=tuple(i for i in range(len(shape)) if i != 1)))


# --- dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.9])
def test_dropout(rng, ratio):
    x = randn(rng, 4, 8, 16, 16) + 5.0  # no zeros in x
    y = P.dropout(x, ratio, seed=7, out=nan_array(*x.shape))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - ratio), rtol=1e-6)
    frac = 1 - kept.mean()
    assert abs(frac - ratio) < 0.02, f"dropped fraction {frac}, ratio {ratio}"
    np.testing.assert_array_equal(P.dropout(x, ratio, seed=7), y)  # reproducible
    if 0 < ratio:
        assert not np.array_equal(P.dropout(x, ratio, seed=8) != 0, kept)
    dy = randn(rng, *x.shape)
    dx = P.dropout_backward(dy, ratio, seed=7, out=nan_array(*x.shape))
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - ratio), 0), rtol=1e-6)


def test_dropout_in_place(rng):
    x = randn(rng, 3, 50)
    y = P.dropout(x, 0.5, seed=1)
    assert P.dropout(x, 0.5, seed=1, out=x) is x
    np.testing.assert_array_equal(x, y)


# --- fully connected -----------------------------------------------------------------------------

@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (3, 23, 19), (5, 64, 10)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear(rng, n, fin, fout, with_bias):
    x, w = randn(rng, n, fin), randn(rng, fout, fin)
    b = randn(rng, fout) if with_bias else None
    y = P.linear(x, w, b, out=nan_array(n, fout))
    assert_close(y, ref.linear(x, w, b))
    dy = randn(rng, n, fout)
    for got, want in zip(P.linear_backward(x, w, dy), ref.linear_backward(x, w, dy)):
        assert_close(got, want)


def test_linear_finite_differences(rng):
    x, w, b = randn(rng, 2, 3), randn(rng, 4, 3), randn(rng, 4)
    g = randn(rng, 2, 4)
    dx, dw, db = P.linear_backward(x, w, g)
    fd_check(lambda: P.linear(x, w, b), [x, w, b], [dx, dw, db], g)


# --- softmax cross-entropy -----------------------------------------------------------------------

@pytest.mark.parametrize("n,classes", [(1, 1), (4, 10), (3, 1000)])
def test_softmax_xent(rng, n, classes):
    z = randn(rng, n, classes) * 5
    labels = rng.integers(0, classes, n)  # int64: converted explicitly
    prob, loss = P.softmax_cross_entropy(z, labels)
    rp, rl = ref.softmax_xent(z, labels)
    assert_close(prob, rp, rtol=1e-5, atol=1e-6)
    assert_close(loss, rl, rtol=1e-5, atol=1e-5)
    d = P.softmax_cross_entropy_backward(prob, labels.astype(np.int32), scale=1 / n,
                                         out=nan_array(n, classes))
    assert_close(d, ref.softmax_xent_backward(z, labels, 1 / n), rtol=1e-5, atol=1e-6)


def test_softmax_xent_large_logits_stable(rng):
    z = np.array([[1000.0, 0.0, -1000.0], [88.0, 89.0, 90.0]], np.float32)
    prob, loss = P.softmax_cross_entropy(z, np.array([0, 2]))
    assert np.isfinite(prob).all() and np.isfinite(loss).all()
    assert_close(loss, ref.softmax_xent(z, np.array([0, 2]))[1], rtol=1e-5, atol=1e-5)


def test_softmax_xent_finite_differences(rng):
    z = randn(rng, 3, 5)
    labels = np.array([1, 4, 0], np.int32)
    prob, _ = P.softmax_cross_entropy(z, labels)
    d = P.softmax_cross_entropy_backward(prob, labels, scale=1.0)
    fd_check(lambda: P.softmax_cross_entropy(z, labels)[1], [z], [d], np.ones(3), eps=1e-2,
             rtol=2e-2, atol=2e-3)


def test_softmax_xent_in_place_in_c(rng):
    """perf_softmax_xent_forward with prob == logits (allowed in C) gives the same loss as out of place
    (the label's logit used to be read after the row was overwritten with probabilities)."""
    from perforated._c.lib import ffi, lib

    logits = randn(rng, 4, 7) * 3
    labels = np.array([0, 6, 3, 3], np.int32)
    prob, loss = P.softmax_cross_entropy(logits, labels)
    buf = logits.copy()
    loss2 = np.empty(4, np.float32)
    p = ffi.from_buffer("float[]", buf)
    assert lib.perf_softmax_xent_forward(4, 7, p, ffi.from_buffer("int32_t[]", labels), p,
                                         ffi.from_buffer("float[]", loss2)) == 0
    assert_close(buf, prob)
    assert_close(loss2, loss)
