"""The mask comparison's baselines on NIN (SPEC §4): networks that skip positions by changing the
architecture instead of interpolating. **Stride** (a layer's stride becomes 2 or 3), **fractional
stride** (a grid mask's rows x cols become the layer's output map) and **resize** (the input image is
downscaled). Used by :mod:`bench.mask_comparison`."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from perforated.data import Split
from perforated.ops.masks import Mask, make_mask
from perforated.graph.model import Model
from perforated.graph.networks import NETWORKS


def strided_rows(layers: Tuple[str, ...], stride: int) -> list:
    """NIN with `stride` on `layers` (their padding kept): an architecture change, no interpolation."""
    rows = []
    for kind, name, p in NETWORKS["nin"]["layers"]():
        if kind == "conv" and name in layers:
            p = dict(p, stride=stride)
        rows.append((kind, name, p))
    return rows


def resize_split(split: Split, side: int) -> Split:
    from PIL import Image

    out = np.empty((len(split), 3, side, side), np.uint8)
    for i, img in enumerate(split.images):
        pil = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))
        out[i] = np.asarray(pil.resize((side, side), Image.BILINEAR)).transpose(2, 0, 1)
    return Split(out, split.labels, split.classes)


def fractional_rows(layers: Tuple[str, ...]) -> list:
    """NIN with `layers` marked fractional-stride: given a grid mask, a layer's output map is the grid."""
    return [(kind, name, dict(p, fractional=True) if kind == "conv" and name in layers else p)
            for kind, name, p in NETWORKS["nin"]["layers"]()]


def fractional_masks(layers: Tuple[str, ...], rate: float, seed: int = 0) -> Dict[str, Mask]:
    """Grid masks at `rate` for fractional-stride `layers`, each sized on the map its predecessors'
    grids leave it (conv2 at rate r sees a map already shrunk by conv1's grid). Raises ValueError
    when a map becomes smaller than a later layer's window."""
    rows, masks = fractional_rows(layers), {}
    for i, name in enumerate(layers):
        size = baseline_model(rows, masks).output_sizes()[name]
        masks[name] = make_mask("grid", size, rate, seed + i)
    baseline_model(rows, masks)  # the last grid must leave the layers after it a valid map too
    return masks


def baseline_model(rows: list, masks: Optional[Dict[str, Mask]] = None, batch: int = 1) -> Model:
    return Model(rows, batch, masks=masks, input_shape=NETWORKS["nin"]["input"], classes=10)


def skipped_rate(model: Model, layers: Tuple[str, ...]) -> float:
    """The share of the original network's output positions that `layers` of `model` do not compute,
    as a perforation rate (averaged over `layers` like the masks' rates). It counts the maps the
    baselines really compute: NIN conv2 (16x16, 5x5, padding 2) at stride 3 computes 6x6, rate
    1 - 36/256 = 0.859, not 1 - 1/9 = 0.889; on the whole network conv2 also sees the map conv1 shrank."""
    dense = Model("nin", 1).output_sizes()
    computed = {s.name: s.layout.positions for s in model.steps if s.kind == "conv"}
    return float(np.mean([1 - computed[n] / np.prod(dense[n]) for n in layers]))
