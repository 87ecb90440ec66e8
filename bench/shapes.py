"""Convolution layer shapes of the paper's networks, one row per layer (DeepBench style).

Each row: (network, layer, in_channels, in_h, in_w, out_channels, kernel, stride, pad, groups,
next_pool) where next_pool = (kernel, stride) of the pooling layer that follows the conv (used by the
pooling-structure mask) or None. Timing batch sizes are the paper's (SPEC §6).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple


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
    perforable: bool

    @property
    def out_hw(self) -> Tuple[int, int]:
        oh = (self.in_h + 2 * self.pad - self.kernel) // self.stride + 1
        ow = (self.in_w + 2 * self.pad - self.kernel) // self.stride + 1
        return oh, ow

    def macs_per_image(self, count: Optional[int] = None) -> int:
        """Multiply-adds of one image; `count` computed positions (default: all)."""
        oh, ow = self.out_hw
        positions = oh * ow if count is None else count
        return positions * self.out_channels * (self.in_channels // self.groups) * self.kernel ** 2


BATCH = {"alexnet": 256, "vgg16": 16, "nin": 128}

CONV_LAYERS = [
    # AlexNet (CaffeNet), 227x227 input
    ConvShape("alexnet", "conv1", 3, 227, 227, 96, 11, 4, 0, 1, True),
    ConvShape("alexnet", "conv2", 96, 27, 27, 256, 5, 1, 2, 2, True),
    ConvShape("alexnet", "conv3", 256, 13, 13, 384, 3, 1, 1, 1, True),
    ConvShape("alexnet", "conv4", 384, 13, 13, 384, 3, 1, 1, 2, True),
    ConvShape("alexnet", "conv5", 384, 13, 13, 256, 3, 1, 1, 2, True),
    # VGG-16, 224x224 input
    ConvShape("vgg16", "conv1_1", 3, 224, 224, 64, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv1_2", 64, 224, 224, 64, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv2_1", 64, 112, 112, 128, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv2_2", 128, 112, 112, 128, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv3_1", 128, 56, 56, 256, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv3_2", 256, 56, 56, 256, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv3_3", 256, 56, 56, 256, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv4_1", 256, 28, 28, 512, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv4_2", 512, 28, 28, 512, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv4_3", 512, 28, 28, 512, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv5_1", 512, 14, 14, 512, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv5_2", 512, 14, 14, 512, 3, 1, 1, 1, True),
    ConvShape("vgg16", "conv5_3", 512, 14, 14, 512, 3, 1, 1, 1, True),
    # NIN (CIFAR-10), 32x32 input; only the spatial convs (the 1x1 cccp layers follow them compact)
    ConvShape("nin", "conv1", 3, 32, 32, 192, 5, 1, 2, 1, True),
    ConvShape("nin", "conv2", 96, 16, 16, 192, 5, 1, 2, 1, True),
    ConvShape("nin", "conv3", 192, 8, 8, 192, 3, 1, 1, 1, True),
]
