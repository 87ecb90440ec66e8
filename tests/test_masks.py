"""Mask generators and explicit masks: counts, order, nearest maps, seeds, Grid structure, scores."""
from __future__ import annotations

import math

import numpy as np
import pytest

import perforated as P
import reference as ref

SIZES = [(1, 1), (1, 7), (6, 1), (13, 17), (16, 16), (27, 27)]
RATES = [0.0, 1 / 3, 0.5, 0.75, 0.9, 0.99]


def check_mask_invariants(m: P.Mask, shape):
    h, w = shape
    assert m.shape == (h, w)
    assert m.indices.dtype == np.int32 and m.indices.shape == (m.count,)
    assert m.nearest.dtype == np.int32 and m.nearest.shape == (h * w,)
    assert 1 <= m.count <= h * w
    assert np.all(np.diff(m.indices) > 0), "indices not strictly increasing"
    assert m.indices[0] >= 0 and m.indices[-1] < h * w
    assert np.all((m.nearest >= 0) & (m.nearest < m.count))
    np.testing.assert_array_equal(m.nearest[m.indices], np.arange(m.count))
    assigned, minimal = ref.nearest_distances((h, w), m.indices, m.nearest)
    bad = np.flatnonzero(assigned != minimal)
    assert bad.size == 0, (f"nearest not minimal at positions {bad[:5]}: squared distance "
                           f"{assigned[bad[:5]]} vs minimum {minimal[bad[:5]]}")
    assert m.rate == pytest.approx(1 - m.count / (h * w))


def _pool_kw(kind):
    return {"pool": (3, 2)} if kind == "pooling" else {}


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", ["uniform", "pooling", "impact"])
def test_topk_kinds_count_and_invariants(rng, kind, shape, rate):
    kw = _pool_kw(kind)
    if kind == "impact":
        kw["scores"] = rng.standard_normal(shape).astype(np.float32)
    if kind == "pooling" and min(shape) < 3:
        kw["pool"] = (1, 1)
    m = P.make_mask(kind, shape, rate, seed=7, **kw)
    lo, hi = ref.count_for_rate(*shape, rate)
    assert lo <= m.count <= hi, f"count {m.count}, expected max(1, floor((1-r)hw)) in [{lo}, {hi}]"
    assert m.count == P.count_for_rate(shape, rate)
    assert m.seed == 7 and m.kind == kind
    check_mask_invariants(m, shape)


def test_count_for_rate_values():
    assert P.count_for_rate((10, 10), 0.0) == 100
    assert P.count_for_rate((10, 10), 0.5) == 50
    assert P.count_for_rate((10, 10), 0.999) == 1      # at least one position
    assert P.count_for_rate((13, 17), 0.75) == math.floor(0.25 * 13 * 17)


@pytest.mark.parametrize("shape, k", [((55, 55), 5), ((27, 27), 3), ((13, 13), 13), ((224, 224), 7),
                                      ((56, 56), 14), ((32, 32), 4)])
def test_count_for_rate_exact_at_one_minus_one_over_k(shape, k):
    # 1 - (1 - 1/k) falls a hair under 1/k in floating point; the count must still be h*w/k exactly
    assert P.count_for_rate(shape, 1 - 1 / k) == shape[0] * shape[1] // k
    assert P.count_for_rate(shape, 1 - 1 / k + 1e-6) == shape[0] * shape[1] // k - 1


@pytest.mark.parametrize("kind", ["uniform", "grid", "pooling"])
def test_reproducible_and_seed_dependent(kind):
    shape, rate = (31, 29), 0.8
    kw = _pool_kw(kind)
    a = P.make_mask(kind, shape, rate, seed=11, **kw)
    b = P.make_mask(kind, shape, rate, seed=11, **kw)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.nearest, b.nearest)
    distinct = {P.make_mask(kind, shape, rate, seed=s, **kw).indices.tobytes() for s in range(8)}
    assert len(distinct) > 1, f"{kind}: 8 seeds gave the same mask"


def test_nearest_tie_breaking_reproducible():
    # Two computed positions at distance 1 from the middle one: a tie broken by the seed.
    idx = np.array([0, 2, 4, 6, 8, 10, 12, 14], np.int32)  # every other column of 1 x 15
    a = P.Mask.from_indices((1, 15), idx, seed=5)
    b = P.Mask.from_indices((1, 15), idx, seed=5)
    np.testing.assert_array_equal(a.nearest, b.nearest)
    check_mask_invariants(a, (1, 15))
    assert a.seed == 5
    choices = {P.Mask.from_indices((1, 15), idx, seed=s).nearest.tobytes() for s in range(16)}
    assert len(choices) > 1, "ties are never broken differently across 16 seeds"


@pytest.mark.parametrize("shape,rate", [((16, 16), 0.75), ((27, 27), 0.5), ((32, 32), 0.9),
                                        ((13, 13), 1 / 3), ((8, 8), 0.0), ((5, 5), 0.97)])
@pytest.mark.parametrize("seed", [0, 1, 2, 12345])
def test_grid_square_structure(shape, rate, seed):
    h, w = shape
    m = P.make_mask("grid", shape, rate, seed=seed)
    check_mask_invariants(m, shape)
    n = max(1, math.floor(math.sqrt((1 - rate) * h * w) + 1e-9))
    rows, cols = np.unique(m.indices // w), np.unique(m.indices % w)
    assert len(rows) == n and len(cols) == n, f"expected {n}x{n} grid, got {len(rows)}x{len(cols)}"
    assert m.count == n * n
    expected = (rows[:, None] * w + cols[None, :]).ravel()
    np.testing.assert_array_equal(m.indices, expected)  # the product set
    for axis_vals, size in ((rows, h), (cols, w)):
        gaps = set(np.diff(axis_vals).tolist())
        assert gaps <= {size // n, -(-size // n)}, f"gaps {gaps} for size {size}, n {n}"
        assert axis_vals[0] < -(-size // n)  # a_0 = ceil(s*u) - 1 < ceil(s)
    assert m.rate == pytest.approx(1 - n * n / (h * w))


@pytest.mark.parametrize("shape,rate", [((13, 17), 0.5), ((8, 32), 0.75), ((30, 7), 0.6)])
def test_grid_non_square(shape, rate):
    h, w = shape
    m = P.make_mask("grid", shape, rate, seed=3)
    check_mask_invariants(m, shape)
    rows, cols = np.unique(m.indices // w), np.unique(m.indices % w)
    nh, nw = len(rows), len(cols)
    assert m.count == nh * nw <= (1 - rate) * h * w + 1e-9
    np.testing.assert_array_equal(m.indices, (rows[:, None] * w + cols[None, :]).ravel())
    for vals, size, n in ((rows, h, nh), (cols, w, nw)):
        assert set(np.diff(vals).tolist()) <= {size // n, -(-size // n)}
    # aspect close to h/w (within a factor of 2 on these shapes)
    assert 0.5 <= (nh / nw) / (h / w) <= 2.0


@pytest.mark.parametrize("shape,pool", [((13, 13), (3, 2)), ((16, 16), (3, 2)), ((27, 27), (3, 2)),
                                        ((12, 17), (3, 2, 1)), ((15, 15), ((3, 2), (2, 1)))])
@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75, 0.9])
def test_pooling_structure_keeps_highest_scores(shape, pool, rate):
    m = P.make_mask("pooling", shape, rate, seed=2, pool=pool)
    check_mask_invariants(m, shape)
    scores = ref.pooling_scores(shape, *pool).ravel()
    kept = np.zeros(scores.size, bool)
    kept[m.indices] = True
    if (~kept).any():
        assert scores[kept].min() >= scores[~kept].max(), (
            f"kept score {scores[kept].min()} < dropped score {scores[~kept].max()}")


def test_pooling_3x3_s2_weights_are_1_2_4():
    s = ref.pooling_scores((13, 13), 3, 2)
    assert set(np.unique(s).tolist()) == {1, 2, 4}
    # windows start at 0, 2, ..., 10: rows/cols 2, 4, 6, 8, 10 are shared, so 25 positions weigh 4
    m = P.make_mask("pooling", (13, 13), 1 - 25.5 / 169, seed=0, pool=(3, 2))
    assert m.count == 25
    np.testing.assert_array_equal(m.indices, np.flatnonzero(s.ravel() == 4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_impact_keeps_top_scores(rng, dtype):
    shape, rate = (13, 17), 0.7
    scores = rng.permutation(13 * 17).reshape(shape).astype(dtype)  # distinct
    m = P.make_mask("impact", shape, rate, seed=0, scores=scores)
    check_mask_invariants(m, shape)
    top = np.sort(np.argsort(scores.ravel())[::-1][:m.count])
    np.testing.assert_array_equal(m.indices, top)


def test_impact_ties_broken_by_seed():
    scores = np.zeros((10, 10), np.float32)
    masks = {P.make_mask("impact", (10, 10), 0.5, seed=s, scores=scores).indices.tobytes()
             for s in range(6)}
    assert len(masks) > 1
    a = P.make_mask("impact", (10, 10), 0.5, seed=4, scores=scores)
    b = P.make_mask("impact", (10, 10), 0.5, seed=4, scores=scores)
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("indices", [[0], [3, 5, 6], list(range(12))])
def test_from_indices(indices):
    m = P.Mask.from_indices((3, 4), np.array(indices), seed=9)
    np.testing.assert_array_equal(m.indices, indices)
    assert m.count == len(indices) and m.kind == "indices" and m.seed == 9
    check_mask_invariants(m, (3, 4))


def test_mask_arrays_are_read_only_copies():
    m = P.make_mask("uniform", (5, 5), 0.5)
    with pytest.raises(ValueError):
        m.indices[0] = 3
    assert "uniform" in repr(m) and len(m) == m.count
