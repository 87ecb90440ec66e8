"""Explicit interpolation and its adjoint."""
from __future__ import annotations

import numpy as np
import pytest

import perforated as P
import reference as ref
from helpers import assert_close, nan_array, randn
from cases import INTERP_MASKS as MASKS

@pytest.mark.parametrize("name", list(MASKS))
def test_interpolate_matches_reference(rng, name):
    m = MASKS[name]()
    c = randn(rng, 2, 3, m.count)
    out = nan_array(2, 3, *m.shape)
    y = P.interpolate(c, m, out=out)
    assert y is out
    np.testing.assert_array_equal(y, ref.interp(c, m.nearest, m.shape))
    # computed positions hold their own values
    np.testing.assert_array_equal(y.reshape(2, 3, -1)[:, :, m.indices], c)


@pytest.mark.parametrize("name", list(MASKS))
def test_interpolate_backward_matches_reference_and_adjoint(rng, name):
    m = MASKS[name]()
    dy = randn(rng, 2, 3, *m.shape)
    out = nan_array(2, 3, m.count)
    dc = P.interpolate_backward(dy, m, out=out)
    assert dc is out
    assert_close(dc, ref.interp_backward(dy, m.nearest, m.count), rtol=1e-5, atol=1e-5)
    c = randn(rng, 2, 3, m.count)
    lhs = np.vdot(P.interpolate(c, m).astype(np.float64), dy)
    rhs = np.vdot(c.astype(np.float64), dc)
    assert abs(lhs - rhs) <= 1e-5 * (np.abs(dy).sum() * np.abs(c).max() + 1)


def test_interpolate_backward_full_mask_is_identity(rng):
    m = P.make_mask("uniform", (4, 6), 0.0)
    dy = randn(rng, 1, 2, 4, 6)
    np.testing.assert_array_equal(P.interpolate_backward(dy, m), dy.reshape(1, 2, -1))
