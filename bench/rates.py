"""Uniform perforation rates for a multiplication reduction: the rule every bench table uses to pick
its plans without ImageNet weights (same rate on every perforable layer, chosen by bisection)."""
from __future__ import annotations

from typing import Callable

import perforated
from perforated.graph.networks import NETWORKS, perforable_layers
from perforated.graph.rows import conv_output_sizes, layer_costs


def multiply_adds(network: str, rate: float) -> int:
    """Multiply-adds per image with `rate` on every perforable layer (compact 1x1 convs after a
    perforated layer count its positions too): the rule of Model.multiply_adds
    (perforated.graph.rows.layer_costs), without building buffers."""
    rows, shape = NETWORKS[network]["layers"](), NETWORKS[network]["input"]
    counts = {}
    if rate > 0:
        sizes = conv_output_sizes(rows, shape)
        counts = {name: perforated.count_for_rate(sizes[name], rate) for name in perforable_layers(rows)}
    return layer_costs(rows, shape, counts)[0]


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
