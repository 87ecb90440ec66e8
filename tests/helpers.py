"""Small helpers shared by the test modules (random arrays, NaN-poisoned outputs, comparisons)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import perforated as P

DEFAULT_SEED = 20160505
#: Base seed of every randomised test; set PERF_TEST_SEED to replay a failure.
BASE_SEED = int(os.environ.get("PERF_TEST_SEED", DEFAULT_SEED))


def randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def nan_array(*shape: int) -> np.ndarray:
    """An output buffer poisoned with NaN, so an unwritten position fails the comparison."""
    return np.full(shape, np.nan, dtype=np.float32)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4,
                 atol: float = 1e-4, what: str = "") -> None:
    """float32 result vs float64 reference; atol is relative to the reference's largest magnitude."""
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=atol * scale, err_msg=what)


def assert_same_params(actual: dict, expected: dict) -> None:
    """Two models' parameters (``Model.params``: layer -> {weight, bias}) equal bit for bit, e.g. a
    resumed training run against an uninterrupted one."""
    for name, p in expected.items():
        for key in p:
            np.testing.assert_array_equal(actual[name][key], p[key], err_msg=f"{name}/{key}")


def gpu_test(f):
    """Marked gpu (run with --run-gpu) and skipped without a CUDA build and a visible GPU."""
    f = pytest.mark.skipif(not P.cuda_available(), reason="no CUDA backend or no GPU (cuda_available())")(f)
    return pytest.mark.gpu(f)
