"""pytest-benchmark regression gates, kept apart from the unit tests (tests/); CI runs them (.ci/run).

    python -m pytest benchmarks --benchmark-autosave      # check against benchmarks/baseline.json
    PERF_UPDATE_BASELINE=1 python -m pytest benchmarks    # record this machine kind's baseline (commit it)
    pytest-benchmark compare 0001 0002                    # two autosaved runs side by side (.benchmarks/)

Absolute times on a shared machine drift by tens of percent, so every gate compares a *ratio* measured
in one run (dense / perforated, best peer / ours), the two calls alternating in order from round to
round, with the ratio saved in the baseline of this machine's instruction set (ratios of our engine to
a peer differ between AVX-512 and AVX2 machines). A gate fails when its ratio falls below TOLERANCE x the
baseline: 0.75 lets a busy 2-core machine's noise through and catches a 1.34x slowdown of either side
(3 runs in a row on a 2-vCPU AMD EPYC, 2026-12-07: each gate's ratio moved by at most 14% between runs,
the lowest was 0.83 of its baseline). A machine kind without a
baseline skips the gates and says how to record one.
"""
import json
import os
from pathlib import Path

import pytest

from bench.measure import isa, machine_metadata

BASELINE = Path(__file__).with_name("baseline.json")
TOLERANCE = 0.75


@pytest.fixture(scope="session")
def baseline():
    data = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    key = isa()
    mine = data.get(key, {})
    updated = dict(mine)
    yield key, mine, updated
    if os.environ.get("PERF_UPDATE_BASELINE") == "1":
        meta = machine_metadata()
        updated["_machine"] = {k: meta.get(k) for k in ("cpu", "isa", "logical_cpus", "perforated_build",
                                                         "openblas_config", "commit", "date")}
        data[key] = updated
        BASELINE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def gate(baseline):
    """gate(name, ratio): record `ratio`; fail when it is below TOLERANCE x this ISA's baseline."""
    key, data, updated = baseline

    def check(name: str, ratio: float) -> None:
        updated[name] = round(ratio, 3)
        if os.environ.get("PERF_UPDATE_BASELINE") == "1":
            return
        if name not in data:
            pytest.skip(f"{name}: no baseline for {key} machines; record one with PERF_UPDATE_BASELINE=1 "
                        f"python -m pytest benchmarks, and commit {BASELINE.name}")
        assert ratio >= TOLERANCE * data[name], (
            f"{name}: ratio {ratio:.2f} < {TOLERANCE} x baseline {data[name]:.2f} ({key})")

    return check
