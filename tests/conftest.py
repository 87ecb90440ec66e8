"""Shared pytest setup: import path, markers (slow, gpu: skipped by default), seeds, helpers.

Seeds: every randomised test draws from ``rng``, seeded from ``PERF_TEST_SEED`` (default below) and
the test's id, so a failure replays with the same environment variable. The base seed is printed in
the report header.
"""
from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

_TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(_TESTS))  # for `import reference`
try:
    import perforated  # noqa: F401  (installed package)
except ImportError:  # source checkout: use the bindings in place (they find build/libperforated.so)
    sys.path.insert(0, str(_TESTS.parent / "bindings" / "python"))
    import perforated  # noqa: F401

from helpers import BASE_SEED  # noqa: E402

try:  # property tests (test_properties.py, test_graph_properties.py): one profile for all
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=100, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("thorough", max_examples=1000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # hypothesis is in the test extra; without it those modules skip
    pass


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", default=False, help="run tests marked gpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test, skipped unless --run-slow")
    config.addinivalue_line("markers", "gpu: needs a CUDA device, skipped unless --run-gpu")


def pytest_collection_modifyitems(config, items):
    for marker, option in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"marked {marker}; run with {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def pytest_report_header(config):
    return [f"PERF_TEST_SEED={BASE_SEED} (set the environment variable to replay)",
            f"libperforated: {perforated.LIBRARY_PATH}",
            f"build: {perforated.build_info()}"]


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from PERF_TEST_SEED and the test id (stable across runs and orderings)."""
    seed = (BASE_SEED * 1_000_003 + zlib.crc32(request.node.nodeid.encode())) % 2**63
    return np.random.default_rng(seed)


@pytest.fixture
def cp():
    """CuPy, for the GPU tests (skipped without it)."""
    return pytest.importorskip("cupy")
