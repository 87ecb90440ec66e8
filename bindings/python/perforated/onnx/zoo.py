"""The model-zoo graphs that ship inside the onnx wheel (``onnx/backend/test/data/light``: AlexNet,
VGG-19, ResNet-50, SqueezeNet, Inception v1 / v2, DenseNet-121, ZFNet-512, ShuffleNet) with weights.

Those files carry their weights as ``ConstantOfShape`` fills (every weight one value); :func:`zoo_model`
replaces each fill by seeded random values of its shape (He-scaled weights, variances and scales in
[0.5, 1.5], small biases), so the networks compute something worth comparing. Real weights: load
the full model-zoo file instead (``perforated.onnx.load(path)``)."""
from __future__ import annotations

import os

import numpy as np

from .importer import _onnx

NAMES = ["bvlc_alexnet", "vgg19", "resnet50", "squeezenet", "inception_v1", "inception_v2", "densenet121",
         "zfnet512", "shufflenet"]


def zoo_path(name: str) -> str:
    onnx, _, _ = _onnx()
    if name not in NAMES:
        raise ValueError(f"zoo_model: name must be one of {NAMES}, got {name!r}")
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is not in this onnx wheel")
    return path


def zoo_model(name: str, seed: int = 0, softmax: bool = True):
    """The zoo graph `name` (an ``onnx.ModelProto``) with seeded random weights; ``softmax=False`` drops
    a final Softmax so the graph outputs logits (a softmax of random logits saturates and would hide
    differences between engines)."""
    onnx, _, numpy_helper = _onnx()
    m = onnx.load(zoo_path(name))
    rng = np.random.default_rng(seed)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in inits[n.input[0]])
            if len(shape) == 1:
                positive = any(k in n.output[0] for k in ("riv", "var", "_s_", "scale"))
                v = rng.uniform(0.5, 1.5, shape) if positive else rng.uniform(-0.1, 0.1, shape)
            else:
                v = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
            g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), n.output[0]))
        else:
            keep.append(n)
    if not softmax and keep[-1].op_type == "Softmax":
        g.output[0].name = keep.pop().input[0]
    del g.node[:]
    g.node.extend(keep)
    return m
