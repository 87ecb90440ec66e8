"""The paper's networks as data (SPEC §7): one row per layer, easy to read and diff.

Rows are tuples ``(kind, name, params)``:

- ``("conv", name, dict(out=, kernel=, stride=1, pad=0, groups=1))``
- ``("relu", name, {})``, ``("dropout", name, dict(ratio=0.5))``
- ``("pool", name, dict(mode="max"|"avg", kernel=, stride=, pad=0))``; ``dict(mode="avg", global_=True)``
  is a global average pooling
- ``("lrn", name, dict(size=5, alpha=1e-4, beta=0.75, k=1.0))``
- ``("fc", name, dict(out=))``
A softmax cross-entropy closes every network (applied by the model, not listed).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

Row = Tuple[str, str, dict]


def _conv(name: str, out: int, kernel: int, stride: int = 1, pad: int = 0, groups: int = 1) -> List[Row]:
    return [("conv", name, dict(out=out, kernel=kernel, stride=stride, pad=pad, groups=groups)),
            ("relu", "relu_" + name, {})]


def nin() -> List[Row]:
    """Network in Network for CIFAR-10 (Lin et al.), 3x32x32 input: 2.22e8 multiply-adds/image."""
    return (_conv("conv1", 192, 5, pad=2) + _conv("cccp1", 160, 1) + _conv("cccp2", 96, 1)
            + [("pool", "pool1", dict(mode="max", kernel=3, stride=2)), ("dropout", "drop1", dict(ratio=0.5))]
            + _conv("conv2", 192, 5, pad=2) + _conv("cccp3", 192, 1) + _conv("cccp4", 192, 1)
            + [("pool", "pool2", dict(mode="avg", kernel=3, stride=2)), ("dropout", "drop2", dict(ratio=0.5))]
            + _conv("conv3", 192, 3, pad=1) + _conv("cccp5", 192, 1) + _conv("cccp6", 10, 1)
            + [("pool", "pool3", dict(mode="avg", global_=True))])


_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)


def alexnet() -> List[Row]:
    """AlexNet, the BVLC CaffeNet variant (pooling before LRN), 3x227x227: 7.24e8 multiply-adds/image."""
    return (_conv("conv1", 96, 11, stride=4)
            + [("pool", "pool1", dict(mode="max", kernel=3, stride=2)), ("lrn", "norm1", dict(_LRN))]
            + _conv("conv2", 256, 5, pad=2, groups=2)
            + [("pool", "pool2", dict(mode="max", kernel=3, stride=2)), ("lrn", "norm2", dict(_LRN))]
            + _conv("conv3", 384, 3, pad=1) + _conv("conv4", 384, 3, pad=1, groups=2)
            + _conv("conv5", 256, 3, pad=1, groups=2)
            + [("pool", "pool5", dict(mode="max", kernel=3, stride=2))]
            + [("fc", "fc6", dict(out=4096)), ("relu", "relu6", {}), ("dropout", "drop6", dict(ratio=0.5)),
               ("fc", "fc7", dict(out=4096)), ("relu", "relu7", {}), ("dropout", "drop7", dict(ratio=0.5)),
               ("fc", "fc8", dict(out=1000))])


def vgg16() -> List[Row]:
    """VGG-16 (configuration D), 3x224x224: 1.547e10 multiply-adds/image."""
    rows: List[Row] = []
    for stage, (width, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, convs + 1):
            rows += _conv(f"conv{stage}_{i}", width, 3, pad=1)
        rows.append(("pool", f"pool{stage}", dict(mode="max", kernel=2, stride=2)))
    rows += [("fc", "fc6", dict(out=4096)), ("relu", "relu6", {}), ("dropout", "drop6", dict(ratio=0.5)),
             ("fc", "fc7", dict(out=4096)), ("relu", "relu7", {}), ("dropout", "drop7", dict(ratio=0.5)),
             ("fc", "fc8", dict(out=1000))]
    return rows


NETWORKS: Dict[str, dict] = {
    "nin": dict(layers=nin, input=(3, 32, 32), classes=10, timing_batch=128),
    "alexnet": dict(layers=alexnet, input=(3, 227, 227), classes=1000, timing_batch=256),
    "vgg16": dict(layers=vgg16, input=(3, 224, 224), classes=1000, timing_batch=16),
}


def perforable_layers(rows: List[Row]) -> List[str]:
    """Convs that are not plain 1x1 stride-1 and are followed (later) by a pooling layer (SPEC §5)."""
    names = []
    for i, (kind, name, p) in enumerate(rows):
        if kind != "conv" or (p["kernel"] == 1 and p.get("stride", 1) == 1):
            continue
        if any(k == "pool" for k, _, _ in rows[i + 1:]):
            names.append(name)
    return names


def next_pool(rows: List[Row], conv_name: str) -> dict:
    """Parameters of the first pooling layer after `conv_name` (for pooling-structure masks)."""
    start = [n for _, n, _ in rows].index(conv_name)
    for kind, _, p in rows[start + 1:]:
        if kind == "pool":
            return p
    raise ValueError(f"no pooling layer follows {conv_name}")


def pool_window(rows: List[Row], conv_name: str, size: Tuple[int, int]) -> Tuple[object, object, int]:
    """(kernel, stride, pad) of the pooling after `conv_name`, for pooling-structure masks over its
    `size` (h, w) output. A global pooling is one window over the whole map (every weight 1)."""
    p = next_pool(rows, conv_name)
    if p.get("global_"):
        return tuple(size), tuple(size), 0
    return p["kernel"], p["stride"], p.get("pad", 0)
