"""Output sizes of a network's layers from its rows alone (no buffers, no plans kept): what masks are
sized from. Below model.py and plan.py, which both read it."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

from .masks import Mask, grid_shape
from .networks import Row
from .pooling import PoolPlan


def pair(v) -> Tuple[int, int]:
    """An int or an (h, w) pair as a pair: rows may give non-square kernels (low-rank layers)."""
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def conv_output_sizes(rows: Sequence[Row], input_shape: Tuple[int, int, int],
                      masks: Optional[Mapping[str, Mask]] = None) -> Dict[str, Tuple[int, int]]:
    """Output ``(h, w)`` of every conv layer of ``rows`` on a ``(c, h, w)`` input. A fractional-stride
    conv (``"fractional"`` in its row) with a mask in ``masks`` hands the next layer its grid."""
    masks = masks or {}
    sizes, (_, h, w) = {}, input_shape
    for kind, name, p in rows:
        if kind == "conv":
            (kh, kw), (sh, sw), (ph, pw) = pair(p["kernel"]), pair(p.get("stride", 1)), pair(p.get("pad", 0))
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            sizes[name] = (h, w)
            if p.get("fractional") and name in masks:  # the next layer sees the grid
                h, w = grid_shape(masks[name])
        elif kind == "pool":
            if p.get("global_"):
                h = w = 1
            else:
                h, w = PoolPlan(1, 1, (h, w), p["kernel"], p["stride"], p.get("pad", 0), p["mode"]).out_size
    return sizes
