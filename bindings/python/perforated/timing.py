"""Timing variants of a network fairly on a shared machine: in alternating rounds.

Why alternate: the speed of a shared machine drifts over minutes (other tenants, clocks, caches). Timing
variant A for a while and then variant B turns that drift into a false speedup; timing A, B, A, B, ...
exposes every variant to the same drift, so the ratio of their medians stays fair. The benchmark
tables, the GPU timings and the greedy search's costs all time through here.
"""
from __future__ import annotations

import time
from typing import Callable, List, Sequence


def alternating_times(calls: Sequence[Callable[[], object]], rounds: int, warmup: bool = True) -> List[List[float]]:
    """Wall times in seconds of each call in `rounds` alternating rounds (round r runs every call
    once, in order): one list of `rounds` times per call. With `warmup`, each call first runs once
    untimed (first-touch page faults, caches, library set-up)."""
    if rounds < 1:
        raise ValueError(f"alternating_times: rounds must be >= 1, got {rounds}")
    if warmup:
        for call in calls:
            call()
    times: List[List[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, runs in zip(calls, times):
            start = time.perf_counter()
            call()
            runs.append(time.perf_counter() - start)
    return times
