"""pytest-benchmark regression gates, kept apart from the unit tests (tests/).

    python -m pytest benchmarks                         # check against benchmarks/baseline.json
    PERF_UPDATE_BASELINE=1 python -m pytest benchmarks  # record a new baseline (commit it)

Absolute times on a shared machine drift by tens of percent, so every gate compares a *ratio* measured
in one run (dense time / perforated time, interleaved) with the ratio saved in the baseline.
"""
import json
import os
from pathlib import Path

import pytest

BASELINE = Path(__file__).with_name("baseline.json")
TOLERANCE = 0.8  # a gate fails when a speedup falls below 80% of its baseline


@pytest.fixture(scope="session")
def baseline():
    data = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    updated = dict(data)
    yield data, updated
    if os.environ.get("PERF_UPDATE_BASELINE") == "1":
        BASELINE.write_text(json.dumps(updated, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def gate(baseline, request):
    """gate(name, speedup): record `speedup`; fail when it is below TOLERANCE x the baseline's."""
    data, updated = baseline

    def check(name: str, speedup: float) -> None:
        updated[name] = round(speedup, 3)
        if os.environ.get("PERF_UPDATE_BASELINE") == "1":
            return
        if name not in data:
            pytest.fail(f"{name}: no baseline; run with PERF_UPDATE_BASELINE=1 and commit {BASELINE.name}")
        assert speedup >= TOLERANCE * data[name], (
            f"{name}: speedup {speedup:.2f} < {TOLERANCE} x baseline {data[name]:.2f}")

    return check
