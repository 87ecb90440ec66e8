"""Convolution layer shapes of the paper's networks, one row per perforable conv (DeepBench style),
derived from the networks' rows (perforated.graph.networks) through the graph IR's shape inference
(perforated.graph.rows): nothing here is written by hand but the timing batch sizes, the paper's (SPEC §6).
NIN lists only its spatial convs: the 1x1 cccp layers follow them compact.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

from perforated.graph.networks import NETWORKS, perforable_layers
from perforated.graph.rows import layer_costs


class ConvShape(NamedTuple):
    network: str
    layer: str
    in_channels: int
    in_h: int
    in_w: int
    out_channels: int
    kernel: int
    stride: int
    pad: int
    groups: int
    out_hw: Tuple[int, int]

    def macs_per_image(self, count: Optional[int] = None) -> int:
        """Multiply-adds of one image; `count` computed positions (default: all)."""
        positions = self.out_hw[0] * self.out_hw[1] if count is None else count
        return positions * self.out_channels * (self.in_channels // self.groups) * self.kernel ** 2


BATCH = {"alexnet": 256, "vgg16": 16, "nin": 128}


def conv_layers(networks=("alexnet", "vgg16", "nin")) -> List[ConvShape]:
    """The perforable convs of `networks`, in network order."""
    out = []
    for net in networks:
        rows, shape = NETWORKS[net]["layers"](), NETWORKS[net]["input"]
        info = layer_costs(rows, shape)[1]
        params = {name: p for kind, name, p in rows if kind == "conv"}
        for name in perforable_layers(rows):
            p, g = params[name], info[name]
            out.append(ConvShape(net, name, g["c_in"], g["h_in"], g["w_in"], p["out"], p["kernel"],
                                 p.get("stride", 1), p.get("pad", 0), p.get("groups", 1), (g["oh"], g["ow"])))
    return out


CONV_LAYERS = conv_layers()
