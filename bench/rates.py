"""Uniform perforation rates for a multiplication reduction: the rule every bench table uses to pick
its plans without ImageNet weights (same rate on every perforable layer, chosen by bisection)."""
from __future__ import annotations

from typing import Callable, Optional

import perforated
from perforated.networks import NETWORKS, perforable_layers


def multiply_adds(network: str, rate: float) -> int:
    """Multiply-adds per image with `rate` on every perforable layer (compact 1x1 convs after a
    perforated layer count its positions too): the same rule as Model.multiply_adds, without
    building buffers."""
    rows = NETWORKS[network]["layers"]()
    perforable = set(perforable_layers(rows))
    c, h, w = NETWORKS[network]["input"]
    count: Optional[int] = None  # computed positions of the current tensor when compact
    total = 0
    for kind, name, p in rows:
        if kind == "conv":
            k, s, pad, g = p["kernel"], p.get("stride", 1), p.get("pad", 0), p.get("groups", 1)
            if not (count is not None and k == 1 and s == 1 and pad == 0):
                h, w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
                count = perforated.count_for_rate((h, w), rate) if name in perforable and rate > 0 else None
            total += (count if count is not None else h * w) * p["out"] * (c // g) * k * k
            c = p["out"]
        elif kind == "pool":
            count = None
            if p.get("global_"):
                h = w = 1
            else:
                h, w = perforated.PoolPlan(1, 1, (h, w), p["kernel"], p["stride"], p.get("pad", 0), p["mode"]).out_size
        elif kind == "fc":
            total += c * h * w * p["out"]
            c, h, w = p["out"], 1, 1
    return total


def bisect_rate(macs_at: Callable[[float], int], reduction: float) -> float:
    """The uniform rate at which ``macs_at(0) / macs_at(rate)`` reaches `reduction` (bisection in [0, 0.99])."""
    dense = macs_at(0.0)
    lo, hi = 0.0, 0.99
    for _ in range(40):
        mid = (lo + hi) / 2
        if dense / macs_at(mid) < reduction:
            lo = mid
        else:
            hi = mid
    return round(hi, 4)


def rate_for_reduction(network: str, reduction: float) -> float:
    """The uniform rate whose multiplication reduction is closest to `reduction` (bisection)."""
    return bisect_rate(lambda rate: multiply_adds(network, rate), reduction)
