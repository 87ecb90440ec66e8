"""Test cases shared by several test modules (geometries, masks, small networks, synthetic data), so that
test modules never import each other."""
from __future__ import annotations

import pickle

import numpy as np

import perforated as P
import reference as ref
from helpers import randn


# -- convolution --------------------------------------------------------------------------------

# id: (N, C, (H, W), Cout, (kh, kw), stride, pad, groups)
CONV_GEOMETRIES = {
    "13x17_23to19_3x3p1": (2, 23, (13, 17), 19, (3, 3), 1, 1, 1),
    "1x1": (2, 5, (13, 17), 7, (1, 1), 1, 0, 1),
    "1x1_groups2": (2, 6, (5, 7), 4, (1, 1), 1, 0, 2),
    "1x1_stride2_pad1": (2, 3, (6, 7), 2, (1, 1), 2, 1, 1),
    "11x11_s4": (1, 3, (31, 35), 8, (11, 11), 4, 0, 1),
    "groups2_5x5p2": (2, 6, (9, 10), 4, (5, 5), 1, 2, 2),
    "nonsquare_stride_pad": (2, 3, (11, 13), 5, (3, 2), (2, 3), (1, 2), 1),
    "kernel_eq_input": (1, 2, (5, 5), 3, (5, 5), 1, 0, 1),
    "big_pad": (1, 2, (4, 5), 2, (3, 3), 1, (3, 2), 1),
    # a ninth entry: dilation
    "dilated_3x3_d2p2": (2, 5, (11, 12), 4, (3, 3), 1, 2, 1, 2),
    "dilated_rect_stride_groups": (2, 4, (13, 11), 6, (3, 2), (2, 1), (1, 2), 2, (2, 3)),
}
OUT_MASKS = ["dense", "uniform", "count1", "full", "grid"]


def out_mask(kind, out_size, seed=1):
    oh, ow = out_size
    if kind == "dense":
        return None
    if kind == "count1":
        return P.Mask.from_indices(out_size, [(oh * ow) // 2], seed=seed)
    if kind == "full":
        return P.make_mask("uniform", out_size, 0.0, seed=seed)
    return P.make_mask(kind, out_size, 0.5, seed=seed)


def conv_setup(rng, geom, mask_kind, implicit, bias=True):
    n, c, (h, w), co, k, stride, pad, groups = geom[:8]
    dilation = geom[8] if len(geom) > 8 else 1
    out_size = ref.conv_out_size((h, w), k, stride, pad, dilation)
    mask = out_mask(mask_kind, out_size)
    in_mask = P.make_mask("uniform", (h, w), 0.6, seed=3) if implicit else None
    x = randn(rng, n, c, in_mask.count) if implicit else randn(rng, n, c, h, w)
    weight = randn(rng, co, c // groups, *k)
    b = randn(rng, co) if bias else None
    kw = dict(stride=stride, pad=pad, groups=groups, mask=mask, input_mask=in_mask)
    if dilation != 1:
        kw["dilation"] = dilation
    return x, weight, b, kw, out_size



# -- interpolation

INTERP_MASKS = {
    "uniform_13x17": lambda: P.make_mask("uniform", (13, 17), 0.6, seed=1),
    "grid_16x16": lambda: P.make_mask("grid", (16, 16), 0.75, seed=2),
    "count1": lambda: P.Mask.from_indices((5, 7), [17]),
    "full": lambda: P.make_mask("uniform", (4, 6), 0.0),
    "row": lambda: P.make_mask("uniform", (1, 9), 0.5, seed=3),
}



# -- pooling

# id: (N, C, (H, W), kernel, stride, pad)
POOL_GEOMETRIES = {
    "16x16_3s2": (2, 3, (16, 16), 3, 2, 0),          # NIN pool: 16 -> 8
    "13x17_3s2": (2, 3, (13, 17), 3, 2, 0),
    "13x17_3s2p1": (1, 4, (13, 17), 3, 2, 1),
    "7x9_2s2p1_ceil_cut": (2, 2, (7, 9), 2, 2, 1),   # last window would start in the padding
    "6x7_rect": (1, 3, (6, 7), (3, 2), (2, 1), (1, 0)),
    "5x6_global": (2, 3, (5, 6), (5, 6), 1, 0),
    "4x5_1x1": (1, 2, (4, 5), 1, 1, 0),
    "9x9_2s2": (1, 2, (9, 9), 2, 2, 0),               # ceil mode: 9 -> 5
}
POOL_INPUTS = ["full", "uniform", "count1", "all"]


def in_mask(kind, size):
    if kind == "full":
        return None
    if kind == "count1":
        return P.Mask.from_indices(size, [size[0] * size[1] // 3], seed=2)
    return P.make_mask("uniform", size, 0.6 if kind == "uniform" else 0.0, seed=4)


def pool_setup(rng, gid, kind):
    n, c, size, k, s, p = POOL_GEOMETRIES[gid]
    m = in_mask(kind, size)
    x = randn(rng, n, c, m.count) if m is not None else randn(rng, n, c, *size)
    oh, ow = ref.pool_out_size(size, k, s, p)
    return x, m, (k, s, p), (n, c, oh, ow)



# -- small networks

TINY_ROWS = [("conv", "c1", dict(out=6, kernel=3, pad=1)), ("relu", "r1", {}),
             ("conv", "c2", dict(out=5, kernel=1)), ("relu", "r2", {}),
             ("conv", "c3", dict(out=3, kernel=1)), ("pool", "gap", dict(mode="avg", global_=True))]



# A small network with every kind of step: a perforated conv feeding 1x1 convs, LRN and dropout on the
# compact tensor, pooling through the nearest map, a second perforated conv feeding an FC layer
# (explicit interpolation), and a grouped conv.
MODEL_ROWS = [
    ("conv", "c1", dict(out=6, kernel=3, pad=1)), ("relu", "r1", {}),
    ("conv", "p1", dict(out=4, kernel=1)), ("relu", "r2", {}),
    ("lrn", "n1", dict(size=3, alpha=1e-2, beta=0.75, k=1.0)), ("dropout", "d1", dict(ratio=0.3)),
    ("pool", "pool1", dict(mode="max", kernel=3, stride=2)),
    ("conv", "c2", dict(out=6, kernel=3, pad=1, groups=2)), ("relu", "r3", {}),
    ("fc", "fc", dict(out=5)),
]
MODEL_INPUT = (3, 9, 11)



# -- synthetic data

def make_batches(directory, rng, n_train=8, n_test=4, batches_=2):
    """A synthetic cifar-10-batches-py release; returns (train data, train labels)."""
    directory.mkdir(parents=True)
    data = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n_train)
    for b, part in enumerate(np.array_split(np.arange(n_train), batches_), start=1):
        with open(directory / f"data_batch_{b}", "wb") as f:
            pickle.dump({b"data": data[part], b"labels": labels[part].tolist()}, f)
    with open(directory / "test_batch", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                     b"labels": rng.integers(0, 10, n_test).tolist()}, f)
    with open(directory / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return data, labels
