"""The CPU inference engine: a Model's forward pass in channels-last layout.

:class:`perforated.graph.model.Model` runs inference (``forward(training=False)`` on the CPU) through this
engine; training and GPU models run the layer steps (NCHW). The engine reads the steps the model built
(plans, masks, parameters) and runs them on channels-last tensors ``(N, positions, C)``, where
positions are ``H*W`` or a perforated layer's computed positions (compact):

- the images are converted once (NCHW -> channels-last) and the first fully connected layer's input
  once back (its weights index ``(C, H, W)``); nothing converts in between;
- a conv writes its output straight from the micro-kernels with its bias, a following batch
  normalisation (folded into a per-channel scale and shift at each call) and a following ReLU fused;
- pooling, LRN and interpolation run on channel vectors; dropout is the identity; ReLUs not fused run
  in place;
- activations alternate between two buffers sized for the largest one (inference keeps none), and the
  last layer writes the model's logits buffer.

Activations are never allocated in :meth:`run` (only a batch-normalised conv's scale and shift, a few
channel vectors, are recomputed at each call from the current statistics). It does not import the
model (it reads steps by ``kind``).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..ops import batchnorm as BN
from ..ops import layers as L
from ..ops.interp import interpolate_nhwc
from ..ops.layout import to_nchw, to_nhwc


class _Op:
    __slots__ = ("name", "kind", "run", "out_shape", "macs", "compact")

    def __init__(self, name: str, kind: str, run: Callable[[], object], out_shape: Tuple[int, ...],
                 macs: int = 0, compact: bool = False):
        self.name, self.kind, self.run, self.out_shape = name, kind, run, out_shape
        self.macs, self.compact = macs, compact


class Engine:
    """Channels-last inference of ``model`` (a host :class:`perforated.graph.model.Model`): :meth:`run`
    computes ``model.logits`` from ``model.x``."""

    def __init__(self, model) -> None:
        if model.context is not None:
            raise ValueError("Engine: the channels-last engine runs CPU models; this model is on the GPU")
        self.model = model
        steps = list(model.steps)
        n = model.batch
        sizes = [self._nhwc_size(s, n) for s in steps] + [int(model.x.size)]
        biggest = max(sizes)
        self._pool = [np.empty(biggest, np.float32), np.empty(biggest, np.float32)]
        self._turn = 0
        self.ops: List[_Op] = []
        c, h, w = model.input_shape
        cur = self._next((n, h * w, c))
        self.ops.append(_Op("input", "layout", lambda x=model.x, y=cur: to_nhwc(x, out=y), cur.shape))
        i = 0
        while i < len(steps):
            step = steps[i]
            kind = step.kind
            last = i == len(steps) - 1
            if kind == "conv":
                bn = steps[i + 1] if i + 1 < len(steps) and steps[i + 1].kind == "batchnorm" else None
                j = i + 1 + (bn is not None)
                relu = j < len(steps) and steps[j].kind == "relu"
                cur = self._conv(step, bn, relu, cur, n)
                i = j + relu
                continue
            if kind == "relu":
                self.ops.append(_Op(step.name, "relu", lambda x=cur: L.relu(x, out=x), cur.shape))
            elif kind == "dropout":
                pass  # the identity at inference
            elif kind == "lrn":
                y = self._next(cur.shape)
                p = step.p
                self.ops.append(_Op(step.name, "lrn", lambda x=cur, y=y, p=p: L.lrn_nhwc(
                    x, p["size"], p["alpha"], p["beta"], p["k"], out=y), y.shape))
                cur = y
            elif kind == "pool":
                y = self._next(step.plan.y_shape_nhwc)
                self.ops.append(_Op(step.name, "pool", lambda x=cur, y=y, plan=step.plan: plan.forward_nhwc(x, out=y),
                                    y.shape))
                cur = y
            elif kind == "interp":
                y = self._next((n, step.mask.shape[0] * step.mask.shape[1], cur.shape[2]))
                self.ops.append(_Op(step.name, "interp", lambda x=cur, y=y, m=step.mask: interpolate_nhwc(x, m, out=y),
                                    y.shape))
                cur = y
            elif kind == "fc":
                cur = self._fc(step, cur, n, last)
            elif kind == "batchnorm":
                raise ValueError(f"Engine: batch normalisation {step.name!r} does not follow a conv")
            else:
                raise ValueError(f"Engine: no channels-last version of step {step.name!r} (kind {kind!r})")
            i += 1
        self._finish(cur, n)

    # -- construction ------------------------------------------------------------------------------

    @staticmethod
    def _nhwc_size(step, n: int) -> int:
        return int(step.y.size)

    def _next(self, shape: Tuple[int, ...]) -> np.ndarray:
        """A view of the buffer the previous op did not write, of ``shape``."""
        self._turn ^= 1
        size = int(np.prod(shape))
        return self._pool[self._turn][:size].reshape(shape)

    def _conv(self, step, bn, relu: bool, x: np.ndarray, n: int) -> np.ndarray:
        plan, params, name = step.plan, step.params, step.name
        if x.shape != plan.x_shape_nhwc:
            raise ValueError(f"Engine: conv {name!r} expects channels-last input {plan.x_shape_nhwc}, "
                             f"the previous layer gives {x.shape}")
        y = self._next(plan.y_shape_nhwc)
        if bn is None:
            def run(x=x, y=y):
                w = params[name]
                plan.forward_nhwc(x, w["weight"], w["bias"], relu=relu, out=y)
        else:
            def run(x=x, y=y):
                w, g = params[name], bn.params[bn.name]
                scale, shift = BN.affine(g["weight"], g["bias"], bn.running["mean"], bn.running["var"], w["bias"])
                plan.forward_nhwc(x, w["weight"], shift, scale=scale, relu=relu, out=y)
        label = name + ("+bn" if bn is not None else "") + ("+relu" if relu else "")
        self.ops.append(_Op(label, "conv", run, y.shape, step.macs, step.layout.mask is not None))
        return y

    def _fc(self, step, x: np.ndarray, n: int, last: bool) -> np.ndarray:
        if x.shape[1] > 1:  # the weights index (C, H, W): back to NCHW once, before the first FC
            flat = self._next((n, x.shape[2], x.shape[1]))
            self.ops.append(_Op(step.name + "_nchw", "layout", lambda x=x, y=flat: to_nchw(x, out=y), flat.shape))
            x = flat
        x2 = x.reshape(n, -1)
        params, name = step.params, step.name
        y = step._y2 if last else self._next((n, step._y2.shape[1]))

        def run(x2=x2, y=y):
            w = params[name]
            L.linear(x2, w["weight"], w["bias"], out=y)

        self.ops.append(_Op(name, "fc", run, y.shape, step.macs))
        return y.reshape(n, 1, -1)

    def _finish(self, cur: np.ndarray, n: int) -> None:
        """Make the last op write (or copy into) the model's logits buffer."""
        logits = self.model.logits
        if np.shares_memory(cur, logits):
            return
        target = logits.reshape(cur.shape[0], -1)
        self.ops.append(_Op("logits", "layout", lambda x=cur, y=target: np.copyto(y, x.reshape(y.shape)),
                            target.shape))

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> np.ndarray:
        for op in self.ops:
            op.run()
        return self.model.logits

    def profile(self, repeat: int = 3) -> List[Dict[str, object]]:
        """Median time of each op after one warm-up pass: rows like :meth:`Model.profile`'s."""
        self.run()
        rows = []
        for op in self.ops:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                op.run()
                times.append(time.perf_counter() - start)
            rows.append({"layer": op.name, "kind": op.kind, "out_shape": tuple(op.out_shape),
                         "compact": op.compact, "seconds": float(np.median(times)), "macs": int(op.macs)})
        return rows
