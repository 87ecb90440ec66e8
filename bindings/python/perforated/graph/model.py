"""A network built from its rows (networks.py) into steps that own weights, plans and buffers.

Perforated convolutions pass their *compact* output on (SPEC §2): ReLU, dropout, LRN and 1x1
stride-1 convolutions run on ``[N][C][count]`` directly (a 1x1 conv on a compact tensor is the same
GEMM on a ``1 x count`` map), and the next spatial layer (a conv with a larger kernel, or a pooling)
reads it through the producer's nearest map. A fully connected layer after a compact tensor
interpolates explicitly first. Every buffer and plan is allocated when the model is built; forward and
backward only run the C library on them.

Buffers: each step owns its output (ReLU and dropout work in place on their input's buffer, as in
Caffe), so activations of one forward pass stay available for the backward pass.

Devices: ``Model(..., device="cuda")`` (or ``context=``) keeps buffers, parameters and gradients in
CuPy arrays on the GPU and builds its plans on the context (buffers.py); steps pass the context to
every call, so the model's work runs in order on the context's stream.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..ops import batchnorm as BN
from ..ops import layers as L
from .._c.buffers import HOST, Buffers, buffers_for
from ..ops.conv import ConvPlan
from .._c.device import Context, is_device_array
from ..files import save_params_npz
from ..ops.interp import interpolate, interpolate_backward
from ..ops.masks import Mask, grid_shape
from .networks import NETWORKS, Row
from .plan import PerforationPlan
from ..ops.pooling import PoolPlan
from .rows import conv_output_sizes, pair


class Layout:
    """Shape of an activation: channels, full map (h, w), and the mask when it is stored compact."""

    def __init__(self, channels: int, h: int, w: int, mask: Optional[Mask] = None):
        self.channels, self.h, self.w, self.mask = channels, h, w, mask

    def shape(self, batch: int) -> Tuple[int, ...]:
        if self.mask is not None:
            return (batch, self.channels, self.mask.count)
        return (batch, self.channels, self.h, self.w)

    @property
    def positions(self) -> int:
        return self.mask.count if self.mask is not None else self.h * self.w


class Step:
    """One layer: reads ``self.x`` (an input buffer), writes ``self.y``. Subclasses set both."""

    name: str
    kind: str
    in_place = False
    x: np.ndarray
    y: np.ndarray

    def forward(self, training: bool) -> None:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, dx: Optional[np.ndarray]) -> None:
        """Write the input gradient into ``dx`` (None for the first layer: skip it)."""
        raise NotImplementedError


class ConvStep(Step):
    kind = "conv"

    def __init__(self, name, x, layout_in: Layout, p: dict, batch: int, mask: Optional[Mask], params,
                 buf: Buffers = HOST):
        self.name, self.x, self.params = name, x, params
        k, s, pad, g = pair(p["kernel"]), pair(p.get("stride", 1)), pair(p.get("pad", 0)), p.get("groups", 1)
        compact_pointwise = layout_in.mask is not None and k == (1, 1) and s == (1, 1) and pad == (0, 0)
        if compact_pointwise and p.get("fractional"):
            raise ValueError(f"Model: conv {name!r} is marked fractional but reads a compact tensor "
                             f"(a 1x1 conv after a perforated layer computes at its positions); "
                             f"fractional stride needs a conv on a full map")
        if compact_pointwise:  # a 1x1 conv on a compact tensor: the same GEMM on a 1 x count map
            self.plan = ConvPlan(batch, layout_in.channels, (1, layout_in.mask.count), p["out"], 1, groups=g,
                                 context=buf.context)
            self.layout = Layout(p["out"], layout_in.h, layout_in.w, layout_in.mask)
            self._x_view = x.reshape(batch, layout_in.channels, 1, layout_in.mask.count)
            self._y_view_shape = (batch, p["out"], 1, layout_in.mask.count)
        else:
            self.plan = ConvPlan(batch, layout_in.channels, (layout_in.h, layout_in.w), p["out"], k, s, pad, g,
                                 mask=mask, input_mask=layout_in.mask, context=buf.context)
            oh, ow = self.plan.out_size
            self._x_view, self._y_view_shape = x, None
            if p.get("fractional") and mask is not None:
                # fractional stride (SPEC §4, a baseline): the grid's rows x cols become the output
                # map, not interpolated; the compact tensor is that map in row-major order
                gh, gw = grid_shape(mask)
                self.layout = Layout(p["out"], gh, gw)
                self._y_view_shape = (batch, p["out"], mask.count)
            else:
                self.layout = Layout(p["out"], oh, ow, mask)
        self.mask = mask
        self.y = buf.zeros(self.layout.shape(batch))
        self._y_view = self.y.reshape(self._y_view_shape) if self._y_view_shape else self.y
        self.macs = self.layout.positions * p["out"] * (layout_in.channels // g) * k[0] * k[1]

    def forward(self, training: bool) -> None:
        w = self.params[self.name]
        self.plan.forward(self._x_view, w["weight"], w["bias"], out=self._y_view)

    def backward(self, dy, dx) -> None:
        w, grad = self.params[self.name], self.params.grads[self.name]
        dy_view = dy.reshape(self._y_view.shape)
        self.plan.backward_filter(self._x_view, dy_view, dweight=grad["weight"], dbias=grad["bias"])
        if dx is not None:
            self.plan.backward_data(w["weight"], dy_view, out=dx.reshape(self._x_view.shape))




class ReluStep(Step):
    kind, in_place = "relu", True

    def __init__(self, name, x, layout: Layout, buf: Buffers = HOST):
        self.name, self.x, self.y, self.layout, self.context = name, x, x, layout, buf.context

    def forward(self, training: bool) -> None:
        L.relu(self.x, out=self.y, context=self.context)

    def backward(self, dy, dx) -> None:
        L.relu_backward(self.y, dy, out=dx, context=self.context)


class DropoutStep(Step):
    kind, in_place = "dropout", True

    def __init__(self, name, x, layout: Layout, ratio: float, seed: int, buf: Buffers = HOST):
        self.name, self.x, self.y, self.layout, self.ratio = name, x, x, layout, ratio
        self.seed, self.calls, self.active, self.context = seed, 0, False, buf.context

    def forward(self, training: bool) -> None:
        self.active = training
        if training:  # a fresh pattern every training step; the backward replays the same one
            self.calls += 1
            L.dropout(self.x, self.ratio, self._seed(), out=self.y, context=self.context)

    def _seed(self) -> int:
        return (self.seed * 1_000_003 + self.calls) % (2**63)

    def backward(self, dy, dx) -> None:
        if self.active:  # after an inference forward (e.g. impact estimation) dropout was the identity
            L.dropout_backward(dy, self.ratio, self._seed(), out=dx, context=self.context)


class LrnStep(Step):
    kind = "lrn"

    def __init__(self, name, x, layout: Layout, p: dict, buf: Buffers = HOST):
        self.name, self.x, self.layout, self.p, self.context = name, x, layout, p, buf.context
        self.y = buf.zeros_like(x)

    def forward(self, training: bool) -> None:
        L.lrn(self.x, self.p["size"], self.p["alpha"], self.p["beta"], self.p["k"], out=self.y,
              context=self.context)

    def backward(self, dy, dx) -> None:
        L.lrn_backward(self.x, self.y, dy, self.p["size"], self.p["alpha"], self.p["beta"], self.p["k"], out=dx,
                       context=self.context)


class PoolStep(Step):
    kind = "pool"

    def __init__(self, name, x, layout_in: Layout, p: dict, batch: int, buf: Buffers = HOST):
        self.name, self.x = name, x
        if p.get("global_"):
            kernel, stride, pad = (layout_in.h, layout_in.w), 1, 0
        else:
            kernel, stride, pad = p["kernel"], p["stride"], p.get("pad", 0)
        self.plan = PoolPlan(batch, layout_in.channels, (layout_in.h, layout_in.w), kernel, stride, pad,
                             mode=p["mode"], input_mask=layout_in.mask, context=buf.context)
        oh, ow = self.plan.out_size
        self.layout = Layout(layout_in.channels, oh, ow)
        self.y = buf.zeros(self.layout.shape(batch))

    def forward(self, training: bool) -> None:
        self.plan.forward(self.x, out=self.y)

    def backward(self, dy, dx) -> None:
        if dx is not None:
            self.plan.backward(self.x, dy, out=dx)


class InterpStep(Step):
    """Explicit interpolation of a compact tensor (before a fully connected layer)."""

    kind = "interp"

    def __init__(self, name, x, layout_in: Layout, batch: int, buf: Buffers = HOST):
        self.name, self.x, self.mask, self.context = name, x, layout_in.mask, buf.context
        self.layout = Layout(layout_in.channels, layout_in.h, layout_in.w)
        self.y = buf.zeros(self.layout.shape(batch))

    def forward(self, training: bool) -> None:
        interpolate(self.x, self.mask, out=self.y, context=self.context)

    def backward(self, dy, dx) -> None:
        if dx is not None:
            interpolate_backward(dy, self.mask, out=dx, context=self.context)


class BatchNormStep(Step):
    """Batch normalisation of a conv's output (``Model(batchnorm=True)``, a training aid; see
    :mod:`perforated.ops.batchnorm`): batch statistics in training, running averages otherwise.
    gamma and beta are the parameters ``<conv>_bn`` ("weight", "bias"); the running averages are
    ``running["mean"]`` and ``running["var"]``. On a CUDA model every array (statistics and running
    averages too) is on the GPU, and every call runs on the model's context."""

    kind = "batchnorm"

    def __init__(self, name, x, layout: Layout, batch: int, params, buf: Buffers = HOST):
        self.name, self.x, self.layout, self.params, self.context = name, x, layout, params, buf.context
        self.y = buf.zeros_like(x)
        c = layout.channels
        self.count = batch * layout.positions
        self.mean, self.invstd = buf.zeros((c,)), buf.put(np.ones(c, np.float32))
        self.running = {"mean": buf.zeros((c,)), "var": buf.put(np.ones(c, np.float32))}
        self._zeros = buf.zeros((c,))  # mean and beta of the inference backward (see backward)
        self.active = False  # the last forward used batch statistics
        self.calibrate = False  # the next forward sets gamma, beta so that it is the identity
        self.collect = False  # forwards use batch statistics and leave the running ones alone

    def forward(self, training: bool) -> None:
        p = self.params[self.name]
        self.active = training or self.calibrate or self.collect
        if not self.active:
            BN.forward_inference(self.x, p["weight"], p["bias"], self.running["mean"], self.running["var"],
                                 out=self.y, context=self.context)
            return
        BN.forward_train(self.x, p["weight"], p["bias"], out=self.y, mean=self.mean, invstd=self.invstd,
                         context=self.context)
        if self.calibrate:
            var = BN.batch_variance(self.invstd)
            for key, v in BN.identity_init(self.mean, var).items():
                p[key][...] = v
            self.running["mean"][...] = self.mean
            self.running["var"][...] = var
            self.calibrate = False
            BN.forward_train(self.x, p["weight"], p["bias"], out=self.y, mean=self.mean, invstd=self.invstd,
                             context=self.context)
        elif training:
            BN.update_running(self.running["mean"], self.running["var"], self.mean, self.invstd, self.count)

    def backward(self, dy, dx) -> None:
        p, grad = self.params[self.name], self.params.grads[self.name]
        if self.active:
            BN.backward(self.x, dy, p["weight"], self.mean, self.invstd, out=dx, dgamma=grad["weight"],
                        dbeta=grad["bias"], context=self.context)
            return
        # after an inference forward the map is affine per channel: dx = dy * gamma / sqrt(var + eps),
        # which is the inference map itself with mean = beta = 0 (the same float operations as
        # dy * scale), so it runs on either device without array arithmetic here
        BN.forward_inference(dy, p["weight"], self._zeros, self._zeros, self.running["var"], out=dx,
                             context=self.context)
        grad["weight"][...] = 0
        grad["bias"][...] = 0


class FcStep(Step):
    kind = "fc"

    def __init__(self, name, x, layout_in: Layout, p: dict, batch: int, params, buf: Buffers = HOST):
        self.name, self.params, self.context = name, params, buf.context
        self.x = x
        self._x2 = x.reshape(batch, -1)
        self.in_features = self._x2.shape[1]
        self.layout = Layout(p["out"], 1, 1)
        self.y = buf.zeros((batch, p["out"], 1, 1))
        self._y2 = self.y.reshape(batch, p["out"])
        self.macs = self.in_features * p["out"]

    def forward(self, training: bool) -> None:
        w = self.params[self.name]
        L.linear(self._x2, w["weight"], w["bias"], out=self._y2, context=self.context)

    def backward(self, dy, dx) -> None:
        w, grad = self.params[self.name], self.params.grads[self.name]
        dx2, dw, db = L.linear_backward(self._x2, w["weight"], dy.reshape(self._y2.shape), context=self.context)
        grad["weight"][...] = dw
        grad["bias"][...] = db
        if dx is not None:
            dx.reshape(dx2.shape)[...] = dx2


class Parameters(dict):
    """name -> {"weight": array, "bias": array}, with ``grads`` of the same structure (CuPy arrays
    for a CUDA model: drawn on the host with the same seed, then copied)."""

    def __init__(self, buf: Buffers = HOST):
        super().__init__()
        self.grads: Dict[str, Dict[str, np.ndarray]] = {}
        self.batchnorms: set = set()  # names of batch normalisations (gamma, beta: no weight decay)
        self._buf = buf

    def add(self, name: str, weight_shape: Sequence[int], fan_in: int, rng: Optional[np.random.Generator]) -> None:
        """Weights drawn with `rng` (He initialisation), or zeros when rng is None (weights that are loaded
        next: VGG-16's 138M random draws cost seconds). A name already here (parameters shared with
        another model of the network, :meth:`Model.with_batch`) is kept, checked against the shape."""
        if self._has(name, weight_shape):
            return
        if rng is None:
            weight = self._buf.zeros(tuple(weight_shape))
        else:
            std = np.sqrt(2.0 / fan_in)  # He initialisation: keeps ReLU activations at unit scale
            draw = rng.standard_normal(weight_shape, dtype=np.float32)  # float32 directly: no float64 copy
            draw *= np.float32(std)  # (VGG-16's 138M weights would need 1.1 GB of float64 temporaries)
            weight = self._buf.put(draw)
        self[name] = {"weight": weight, "bias": self._buf.zeros((weight_shape[0],))}
        self.grads[name] = {k: self._buf.zeros_like(v) for k, v in self[name].items()}

    def add_batchnorm(self, name: str, channels: int) -> None:
        """gamma (as "weight", ones) and beta (as "bias", zeros) of a batch normalisation."""
        if self._has(name, (channels,)):
            return
        self[name] = {"weight": self._buf.put(np.ones(channels, np.float32)),
                      "bias": self._buf.zeros((channels,))}
        self.grads[name] = {k: self._buf.zeros_like(v) for k, v in self[name].items()}
        self.batchnorms.add(name)


    def _has(self, name: str, weight_shape: Sequence[int]) -> bool:
        if name not in self:
            return False
        if tuple(self[name]["weight"].shape) != tuple(weight_shape):
            raise ValueError(f"Model: shared parameters {name!r} have shape {tuple(self[name]['weight'].shape)}, "
                             f"the network needs {tuple(weight_shape)}")
        return True


class Model:
    """A network (``"nin"``, ``"alexnet"``, ``"vgg16"`` or a list of rows) at a fixed batch size.

    Args:
      network: a name from ``perforated.graph.networks.NETWORKS`` or a list of rows.
      batch: images per forward call (buffers are sized for it).
      plan: a :class:`PerforationPlan` (or a path to its JSON), or ``masks`` given directly.
      weights: an ``.npz`` path or a ``{name: {"weight", "bias"}}`` dict; random (He, seeded) if None.
      input_shape, classes: needed when ``network`` is a list of rows.
      device: ``"cpu"`` (numpy arrays) or ``"cuda"`` (the default context of the current GPU); or
        context: a :class:`perforated.Context`, which wins over ``device``. A CUDA model keeps
        buffers, parameters and gradients as CuPy arrays on the GPU (the ``cuda`` extra:
        ``pip install 'perforated[cuda]'``); random weights are drawn on the host with the same seed
        as on the CPU, so both devices start from the same network. A build without CUDA raises
        ``UnsupportedError``, a machine without a GPU ``InvalidArgumentError``, both naming the device.
      batchnorm: add a batch normalisation after every conv but the last (a training aid, on either
        device; :mod:`perforated.ops.batchnorm`). Its parameters are ``<conv>_bn``; :meth:`deploy_params` and
        :meth:`save_weights` fold it into the convs, giving weights of the plain network.

      inference: how ``forward(training=False)`` runs on the CPU: ``"nhwc"`` (default), the
        channels-last engine of :mod:`perforated.graph.engine` (fused conv epilogues, no per-layer layout
        changes), or ``"layers"``, the layer steps in NCHW that training uses (to compare the two).
        Training, the backward pass and GPU models always run the steps.
      shared_params: the ``params`` of another model of this network on the same device, used as they
        are (not copied): what :meth:`with_batch` passes.

    A conv row with ``fractional=True`` and a mask is a fractional-stride conv (a baseline, SPEC §4):
    the mask must be a grid, and its rows x cols are the layer's output map, which the next layers
    read as a smaller map (no interpolation).

    On the GPU, :meth:`forward` returns the logits as a CuPy array on the device (``cupy.asnumpy``
    copies them to the host); calls return once the work is enqueued, and :meth:`synchronize` waits
    for it (the context's stream is ordered with CuPy's default stream, see :mod:`perforated._c.device`).
    """

    def __init__(self, network: Union[str, List[Row]], batch: int,
                 plan: Union[None, PerforationPlan, str, Path] = None, masks: Optional[Dict[str, Mask]] = None,
                 weights=None, seed: int = 0, input_shape: Optional[Tuple[int, int, int]] = None,
                 classes: Optional[int] = None, device: str = "cpu", context: Optional[Context] = None,
                 batchnorm: bool = False, inference: str = "nhwc", shared_params: Optional[Parameters] = None):
        if isinstance(network, str):
            if network not in NETWORKS:
                raise ValueError(f"Model: network must be one of {sorted(NETWORKS)}, got {network!r}")
            info = NETWORKS[network]
            self.name, self.rows = network, info["layers"]()
            input_shape, classes = input_shape or info["input"], classes or info["classes"]
        else:
            if input_shape is None or classes is None:
                raise ValueError("Model: a network given as rows needs input_shape and classes")
            self.name, self.rows = "custom", list(network)
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"Model: batch must be a positive int, got {batch!r}")
        self.batch, self.input_shape, self.classes = batch, tuple(input_shape), classes
        self.buffers = buffers_for(device, context)
        self.device, self.context = self.buffers.device, self.buffers.context
        if isinstance(plan, (str, Path)):
            plan = PerforationPlan.load(plan)
        if plan is not None and any(p.get("fractional") for kind, _, p in self.rows if kind == "conv"):
            raise ValueError("Model: a network with fractional-stride convs takes its grid masks as masks=, "
                             "not plan= (a plan sizes every mask on the original maps, which these convs shrink)")
        self.plan = plan
        self.masks: Dict[str, Mask] = dict(masks or {})
        if plan is not None:
            self.masks.update(plan.masks(self.output_sizes()))
        if shared_params is not None and shared_params._buf.device != self.buffers.device:
            raise ValueError(f"Model: shared_params live on {shared_params._buf.device}, the model on {self.device}")
        self.params = Parameters(self.buffers) if shared_params is None else shared_params
        self.batchnorm = bool(batchnorm)
        if inference not in ("nhwc", "layers"):
            raise ValueError(f"Model: inference must be 'nhwc' or 'layers', got {inference!r}")
        self.inference = inference
        self._engine = None
        self._activations_stale = False
        draws = weights is None and shared_params is None  # given or shared weights: no draws
        self._build(np.random.default_rng(seed) if draws else None, seed)
        if weights is not None:
            self.load_weights(weights)

    # -- construction --------------------------------------------------------------------------

    def with_batch(self, batch: int) -> "Model":
        """This network, its masks and its parameters at another batch size: the parameters are shared,
        not copied (training either model trains both); only buffers are allocated."""
        network = self.name if self.name in NETWORKS else self.rows
        other = Model(network, batch, masks=self.masks, input_shape=self.input_shape, classes=self.classes,
                      context=self.context, batchnorm=self.batchnorm, inference=self.inference,
                      shared_params=self.params)
        other.plan = self.plan
        return other

    def output_sizes(self) -> Dict[str, Tuple[int, int]]:
        """Output (h, w) of every conv layer (masks are sized from these), without building buffers."""
        return conv_output_sizes(self.rows, self.input_shape, self.masks)

    def _build(self, rng: Optional[np.random.Generator], seed: int) -> None:
        c, h, w = self.input_shape
        buf = self.buffers
        self.x = buf.zeros((self.batch, c, h, w))
        layout, cur = Layout(c, h, w), self.x
        self.steps: List[Step] = []
        last_conv = max((i for i, (kind, _, _) in enumerate(self.rows) if kind == "conv"), default=-1)
        for index, (kind, name, p) in enumerate(self.rows):
            if kind == "conv":
                kh, kw = pair(p["kernel"])
                cin_g = layout.channels // p.get("groups", 1)
                self.params.add(name, (p["out"], cin_g, kh, kw), cin_g * kh * kw, rng)
                step = ConvStep(name, cur, layout, p, self.batch, self.masks.get(name), self.params, buf)
            elif kind == "relu":
                step = ReluStep(name, cur, layout, buf)
            elif kind == "dropout":
                step = DropoutStep(name, cur, layout, p["ratio"], seed * 7919 + index, buf)
            elif kind == "lrn":
                step = LrnStep(name, cur, layout, p, buf)
            elif kind == "pool":
                step = PoolStep(name, cur, layout, p, self.batch, buf)
            elif kind == "fc":
                if layout.mask is not None:
                    self.steps.append(InterpStep(name + "_interp", cur, layout, self.batch, buf))
                    cur, layout = self.steps[-1].y, self.steps[-1].layout
                fan_in = layout.channels * layout.h * layout.w
                self.params.add(name, (p["out"], fan_in), fan_in, rng)
                step = FcStep(name, cur, layout, p, self.batch, self.params, buf)
            else:
                raise ValueError(f"Model: unknown layer kind {kind!r} in row {name!r}")
            self.steps.append(step)
            cur, layout = step.y, step.layout
            if kind == "conv" and self.batchnorm and index != last_conv:
                self.params.add_batchnorm(name + "_bn", layout.channels)
                self.steps.append(BatchNormStep(name + "_bn", cur, layout, self.batch, self.params, buf))
                cur = self.steps[-1].y
        if layout.channels * layout.h * layout.w != self.classes or layout.mask is not None:
            raise ValueError(f"Model: the last layer gives {layout.channels}x{layout.h}x{layout.w} values per "
                             f"image, expected {self.classes} classes")
        self.logits = cur.reshape(self.batch, self.classes)
        unknown = set(self.masks) - {s.name for s in self.steps if s.kind == "conv"}
        if unknown:
            raise ValueError(f"Model: masks given for unknown conv layers {sorted(unknown)}")

    # -- running -------------------------------------------------------------------------------

    def forward(self, x: Optional[np.ndarray] = None, training: bool = False) -> np.ndarray:
        """Logits ``(batch, classes)`` of the images ``x`` (copied into the input buffer), or of the
        input buffer ``model.x`` as it is when x is None (no copy: for timing). Returns a new array
        (the next call does not change it); ``model.logits`` is the model's own buffer, which holds
        the same values until the next pass.

        On a CUDA model, ``x`` may be a numpy array (copied to the GPU) or a GPU array, and the
        logits are a CuPy array on the GPU, computed asynchronously (see :meth:`synchronize`)."""
        if x is not None:
            if tuple(x.shape) != self.x.shape:
                raise ValueError(f"Model.forward: x must have shape {self.x.shape}, got {tuple(x.shape)}")
            self.buffers.copy_into(self.x, x)
        if not training and self._use_engine():
            self._activations_stale = True  # a backward pass reruns the layer steps first
            return self._fresh(self.engine.run())
        for step in self.steps:
            step.forward(training)
        self._activations_stale = False
        return self._fresh(self.logits)

    def _fresh(self, a):
        """A new array of the model's kind (host or device) holding a's values."""
        out = self.buffers.zeros_like(a)
        self.buffers.copy_into(out, a)
        return out

    def _use_engine(self) -> bool:
        """Inference on the CPU runs the channels-last engine (:mod:`perforated.graph.engine`), unless
        ``inference="layers"`` or a batch normalisation is gathering statistics (those need the steps)."""
        if self.inference != "nhwc" or self.context is not None:
            return False
        if any(getattr(s, "calibrate", False) or getattr(s, "collect", False) for s in self.steps):
            return False
        if self._engine is None:
            from .engine import Engine

            self._engine = Engine(self)
        return True

    @property
    def engine(self):
        """The channels-last inference engine of a CPU model (built on first use)."""
        if self._engine is None:
            from .engine import Engine

            self._engine = Engine(self)
        return self._engine

    def synchronize(self) -> None:
        """Wait until the model's GPU work has finished (a no-op on the CPU): before timing or
        reading results on another CUDA stream."""
        self.buffers.synchronize()

    def loss(self, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Per-image cross-entropy and softmax probabilities of the last forward pass (device arrays
        on a CUDA model; ``labels`` may be numpy, copied to the GPU)."""
        labels = self.buffers.labels("Model.loss", labels, self.batch)
        prob, loss = L.softmax_cross_entropy(self.logits, labels, context=self.context)
        self._prob = prob
        return loss, prob

    def backward(self, labels: np.ndarray, hook=None) -> None:
        """Gradients of the mean cross-entropy of the last forward pass into ``model.params.grads``
        (call :meth:`loss` first). ``hook(step, dy)``, if given, sees each step's output gradient
        before the step runs its backward (e.g. impact estimation reads conv outputs' gradients)."""
        labels = self.buffers.labels("Model.backward", labels, self.batch)
        self._backward_from(L.softmax_cross_entropy_backward(self._prob, labels, 1.0 / self.batch,
                                                             context=self.context), hook)

    def backward_logits(self, dlogits: np.ndarray, hook=None) -> None:
        """Gradients into ``model.params.grads`` from a gradient of some loss with respect to the last
        forward pass's logits (batch x classes; a host array is copied to the GPU on a CUDA model), for
        losses other than the cross-entropy with labels (e.g. distillation). ``hook`` as in
        :meth:`backward`."""
        if is_device_array(dlogits):
            if self.buffers is HOST:
                raise TypeError("Model.backward_logits: dlogits is a GPU array, this model runs on the CPU "
                                "(give a numpy array)")
            dlogits = self.buffers.to_host(dlogits)  # batch x classes: a tiny copy, checked like a host array
        shape = (self.batch, self.classes)
        if not isinstance(dlogits, np.ndarray) or dlogits.shape != shape:
            raise ValueError(f"Model.backward_logits: dlogits must be an array of shape {shape}, got "
                             f"{getattr(dlogits, 'shape', type(dlogits).__name__)}")
        # a float32 copy: the backward rewrites gradients in place, and must not touch the caller's array
        self._backward_from(self.buffers.put(np.array(dlogits, dtype=np.float32)), hook)

    def _backward_from(self, dy, hook) -> None:
        """The backward pass from ``dy``, the logits' gradient already on the model's device (the
        cross-entropy's stays there: no check, copy or synchronisation in the training step)."""
        if not hasattr(self, "_grad_buffers"):
            self._grad_buffers: Dict[int, np.ndarray] = {}
        if self._activations_stale:  # the last forward ran the engine: the steps' outputs are not set
            for step in self.steps:
                step.forward(False)
            self._activations_stale = False
        dy = dy.reshape(self.steps[-1].y.shape)
        for step in reversed(self.steps):
            if step.in_place:  # ReLU / dropout: the gradient is rewritten in place, like the activation
                dx = dy
            elif step.x is self.x:
                dx = None  # the images need no gradient
            else:
                dx = self._grad_buffers.get(id(step.x))
                if dx is None:
                    dx = self._grad_buffers[id(step.x)] = self.buffers.zeros_like(step.x)
            if hook is not None:
                hook(step, dy)
            step.backward(dy, dx)
            if dx is not None:
                dy = dx

    # -- weights ---------------------------------------------------------------------------------

    def save_weights(self, path: Union[str, Path]) -> None:
        """Weights as ``.npz`` (``name/weight``, ``name/bias``) of :meth:`deploy_params`, written
        atomically."""
        save_params_npz(path, self.deploy_params())

    def deploy_params(self) -> Dict[str, Dict[str, np.ndarray]]:
        """The weights of the plain network as host arrays: each batch normalisation (running
        statistics) folded into its conv, so that a model without ``batchnorm`` computes the same."""
        to_host = self.buffers.to_host
        out = {n: {k: to_host(v) for k, v in p.items()} for n, p in self.params.items()
               if n not in self.params.batchnorms}
        for step in self.steps:
            if isinstance(step, BatchNormStep):
                conv = step.name[:-len("_bn")]
                bn = self.params[step.name]
                out[conv]["weight"], out[conv]["bias"] = BN.fold(
                    out[conv]["weight"], out[conv]["bias"], to_host(bn["weight"]), to_host(bn["bias"]),
                    to_host(step.running["mean"]), to_host(step.running["var"]))
        return out

    def calibrate_batchnorm(self, x: np.ndarray) -> None:
        """Make every batch normalisation the identity on the images ``x`` (one batch): gamma and
        beta from its input's statistics, running averages set to them. A model with loaded plain
        weights then computes what the plain network does, and training goes on from there."""
        for step in self.steps:
            if isinstance(step, BatchNormStep):
                step.calibrate = True
        self.forward(x, training=False)

    def recompute_batchnorm_statistics(self, inputs: Iterable[np.ndarray]) -> int:
        """Set every batch normalisation's running mean and variance to the statistics of its input
        over ``inputs`` (arrays of the model's input shape), with dropout off and the weights
        unchanged ("precise BN", Wu & Johnson 2021); returns the number of batches used.

        Why: the running averages (momentum 0.1) trail weights that move fast at a high learning rate,
        and they are gathered with dropout on, which gives NIN's conv2 and conv3 a wider input than
        the test-time network sees; the folded weights inherit both errors. The variance pools the
        batches exactly (mean of E[x^2] minus the squared mean), unbiased like PyTorch's."""
        steps = [s for s in self.steps if isinstance(s, BatchNormStep)]
        if not steps:
            return 0
        to_host = self.buffers.to_host
        sums = [[0.0, 0.0] for _ in steps]  # per step: sum of batch means, of batch E[x^2]
        n = 0
        for s in steps:
            s.collect = True
        try:
            for x in inputs:
                self.forward(x, training=False)
                for acc, s in zip(sums, steps):
                    mean = to_host(s.mean).astype(np.float64)
                    acc[0] = acc[0] + mean
                    acc[1] = acc[1] + BN.batch_variance(to_host(s.invstd)) + mean * mean
                n += 1
        finally:
            for s in steps:
                s.collect = False
        if n == 0:
            return 0
        for (mean_sum, square_sum), s in zip(sums, steps):
            mean = mean_sum / n
            count = n * s.count
            var = np.maximum(square_sum / n - mean * mean, 0.0) * (count / max(count - 1, 1))
            s.running["mean"][...] = self.buffers.put(mean.astype(np.float32))
            s.running["var"][...] = self.buffers.put(var.astype(np.float32))
        return n

    def load_weights(self, weights) -> None:
        """Load from an ``.npz`` path or a dict (of numpy or GPU arrays, e.g. another model's
        ``params``); shapes must match the network. With ``batchnorm``, weights of the plain network
        load too: gamma and beta keep their values (see :meth:`calibrate_batchnorm`)."""
        if isinstance(weights, (str, Path)):
            with np.load(weights) as data:
                flat = {k: data[k] for k in data.files}
        else:
            flat = {f"{n}/{k}": v for n, p in weights.items() for k, v in p.items()}
        for name, p in self.params.items():
            for key, arr in p.items():
                src = flat.get(f"{name}/{key}")
                if src is None and name in self.params.batchnorms:
                    continue
                if src is None:
                    raise ValueError(f"Model.load_weights: missing {name}/{key}")
                if src.shape != arr.shape:
                    raise ValueError(f"Model.load_weights: {name}/{key} has shape {src.shape}, expected {arr.shape}")
                self.buffers.copy_into(arr, src, casting="unsafe")  # as ``arr[...] = src``

    # -- metrics (SPEC §8) -----------------------------------------------------------------------

    def multiply_adds(self, legacy: bool = False) -> int:
        """Multiply-adds of conv and FC layers per image, perforated layers counting computed positions.

        ``legacy=True`` reproduces the reference counter, which divides grouped convs by g twice."""
        total = 0
        for step, (kind, name, p) in zip(self._layer_steps(), self.rows):
            if kind == "conv":
                total += step.macs // (p.get("groups", 1) if legacy else 1)
            elif kind == "fc":
                total += step.macs
        return total

    def _layer_steps(self) -> List[Step]:
        return [s for s in self.steps if s.kind not in ("interp", "batchnorm")]

    def activation_bytes(self) -> int:
        """Bytes of all layer outputs of one forward pass (compact where compact; in-place layers add
        nothing) plus the masks' index tables (indices and nearest maps)."""
        outputs = sum(s.y.nbytes for s in self.steps if not s.in_place)
        tables = sum(m.indices.nbytes + m.nearest.nbytes for m in self.masks.values())
        return outputs + tables

    def profile(self, repeat: int = 3) -> List[Dict[str, object]]:
        """Median time of each step of the forward pass (after one full warm-up pass), in seconds,
        with its output shape and multiply-adds per image: a per-layer table of the network."""
        import time

        if self._use_engine():
            return self.engine.profile(repeat)
        self.forward()
        self.synchronize()  # on the GPU, each step is timed to the end of its own work
        rows = []
        for step in self.steps:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                step.forward(False)
                self.synchronize()
                times.append(time.perf_counter() - start)
            rows.append({"layer": step.name, "kind": step.kind, "out_shape": tuple(step.y.shape),
                         "compact": getattr(step, "layout", None) is not None and step.layout.mask is not None,
                         "seconds": float(np.median(times)), "macs": int(getattr(step, "macs", 0))})
        return rows

    def conv_count(self) -> int:
        return sum(1 for kind, _, _ in self.rows if kind == "conv")
