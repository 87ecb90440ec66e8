"""The float64 references' backward functions checked by central finite differences (in float64), so
comparing the C gradients against them is comparing against the true derivative of the definitions."""
from __future__ import annotations

import numpy as np
import pytest

import reference as ref


class _FakeMask:
    """indices/nearest/shape/count of a mask, built in numpy (nearest by brute force)."""

    def __init__(self, shape, indices):
        h, w = shape
        self.shape, self.indices, self.count = (h, w), np.asarray(indices), len(indices)
        rows, cols = np.divmod(np.arange(h * w), w)
        kr, kc = np.divmod(self.indices, w)
        d2 = (rows[:, None] - kr) ** 2 + (cols[:, None] - kc) ** 2
        self.nearest = d2.argmin(axis=1)


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def _mask(rng, shape, count):
    return _FakeMask(shape, np.sort(rng.choice(shape[0] * shape[1], count, replace=False)))


@pytest.mark.parametrize("stride,pad,groups", [(1, 0, 1), ((2, 1), (1, 2), 2)])
@pytest.mark.parametrize("perforated", [False, True])
def test_conv_reference_gradients(rng, stride, pad, groups, perforated):
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((2, 4 // groups, 3, 2))
    oh, ow = ref.conv_out_size((5, 6), (3, 2), stride, pad)
    mask = _mask(rng, (oh, ow), max(1, oh * ow // 3)) if perforated else None
    in_mask = _mask(rng, (5, 6), 11) if perforated else None
    xin = rng.standard_normal((2, 4, 11)) if perforated else x
    g = rng.standard_normal((2, 2, oh, ow))

    def loss():
        return float((ref.perforated_conv2d(xin, w, None, stride, pad, groups, mask, in_mask) * g).sum())

    dx, dw, db = ref.perforated_conv2d_backward(xin, w, g, stride, pad, groups, mask, in_mask)
    np.testing.assert_allclose(dx, numeric_grad(loss, xin), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    if mask is None:
        np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_reference_gradients(rng, mode):
    in_mask = _mask(rng, (7, 6), 20)
    x = rng.standard_normal((2, 2, 20))
    g = rng.standard_normal((2, 2) + ref.pool_out_size((7, 6), 3, 2, 1))

    def loss():
        return float((ref.perforated_pool2d(x, 3, 2, 1, mode, in_mask) * g).sum())

    dx = ref.perforated_pool2d_backward(x, g, 3, 2, 1, mode, in_mask)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)


def test_lrn_reference_gradient(rng):
    x = rng.standard_normal((2, 7, 3)) * 3
    g = rng.standard_normal(x.shape)
    args = (5, 0.3, 0.75, 1.5)  # large alpha so the cross terms matter
    dx = ref.lrn_backward(x, g, *args)
    np.testing.assert_allclose(dx, numeric_grad(lambda: float((ref.lrn(x, *args) * g).sum()), x),
                               rtol=1e-6, atol=1e-7)


def test_softmax_linear_reference_gradients(rng):
    z = rng.standard_normal((3, 5))
    labels = np.array([0, 4, 2])
    d = ref.softmax_xent_backward(z, labels, 0.5)
    np.testing.assert_allclose(
        d, numeric_grad(lambda: 0.5 * float(ref.softmax_xent(z, labels)[1].sum()), z), atol=1e-7)
    x, w, g = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal((3, 2))
    dx, dw, _ = ref.linear_backward(x, w, g)
    np.testing.assert_allclose(dx, numeric_grad(lambda: float((ref.linear(x, w) * g).sum()), x), atol=1e-7)
    np.testing.assert_allclose(dw, numeric_grad(lambda: float((ref.linear(x, w) * g).sum()), w), atol=1e-7)


def test_pool_out_size_caffe_ceil():
    assert ref.pool_out_size((32, 32), 3, 2, 0) == (16, 16)   # NIN pool1
    assert ref.pool_out_size((16, 16), 3, 2, 0) == (8, 8)     # NIN pool2
    assert ref.pool_out_size((55, 55), 3, 2, 0) == (27, 27)   # AlexNet pool1
    assert ref.pool_out_size((5, 5), 2, 2, 1) == (3, 3)       # last window would start in padding
