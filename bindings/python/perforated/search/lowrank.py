"""Low-rank acceleration (the MXNet accnn tool, SPEC §10) and its combination with perforation.

Three decompositions, each turning one layer into two cheaper ones:

- **spatial** (Tai et al.; accnn ``acc_conv``): a ``(N, C, kh, kw)`` conv becomes a vertical
  ``(K, C, kh, 1)`` conv and a horizontal ``(N, K, 1, kw)`` conv. ``W[n, c, i, j]`` is the matrix
  ``M[(c, i), (n, j)]`` of shape ``(C*kh) x (N*kw)``; its rank-K truncated SVD ``U S V^T`` gives
  ``vertical[k, c, i] = U[(c, i), k] sqrt(S_k)`` and ``horizontal[n, k, j] = sqrt(S_k) V^T[k, (n, j)]``.
  The vertical part carries the vertical stride and padding, the horizontal part the horizontal ones
  and the bias. Grouped convs are decomposed per group (rank K per group, both parts grouped).
- **svd** of a fully connected layer (accnn ``acc_fc``): ``W ~ U_K S_K V_K^T``, two FC layers of K
  hidden units (``S_K V_K^T`` then ``U_K`` with the bias), no ReLU between.
- **channel** (Zhang et al., the paper's combination): a ``k x k`` conv with ``K`` filters then a 1x1
  conv with ``N`` filters, fitted to the layer's responses ``y`` (before ReLU) on images (real data,
  or random images): ``P`` = the top-K principal directions of ``y`` (per group), the ``k x k`` part
  is ``P^T W`` with bias ``P^T b``, the 1x1 part is ``P`` with bias ``mean(y) - P P^T mean(y)``, so
  ``y ~ P P^T (y - mean) + mean`` (the linear, symmetric version of Zhang et al.). **Asymmetric**
  (Zhang et al. §3.3, the default when layers are decomposed in sequence): the layer's input comes
  from the already decomposed layers before it, so its responses are ``y_hat`` rather than ``y``; the
  fit is the rank-K reduced-rank regression of the original ``y`` on ``y_hat`` (``M = P Q``: ``Q`` the
  least-squares map projected on ``P``, the top-K directions of the fitted values), which stops the
  approximation errors of consecutive layers from adding up. The nonlinear refinement (through the
  ReLU) is not implemented.

**Rank selection** (Zhang et al., as accnn's ``rank_selection.py`` but greedy and with each layer's own
kernel and channels, Quirk Q7): each layer has a PCA energy spectrum (eigenvalues of its response
covariance when images are given and the method is ``channel``, else squared singular values of the
matrix its decomposition factorises); ranks maximise the product of kept energy fractions under a
multiply-add budget: ``network multiply-adds <= original / ratio``. Greedy: start undecomposed and
repeatedly lower the rank of the layer whose log-energy loss per saved multiply-add is smallest.

**Plans** (the accnn ``config.json`` habit) hold, per layer, ``rank`` and ``method`` and optionally a
perforation ``rate`` / mask ``kind`` / ``seed``::

    {"network": "vgg16", "theoretical_speedup": 2.01,
     "layers": {"conv2_1": {"rank": 70, "method": "spatial"},
                "conv3_1": {"rank": 120, "method": "channel", "rate": 0.5, "kind": "uniform", "seed": 3},
                "conv1_1": {"rate": 0.3}}}

A perforated channel-decomposed layer keeps its mask on the ``k x k`` part (``<name>_a``) and its 1x1
part (``<name>_b``) runs on the compact tensor; a perforated spatial layer keeps its mask on the
horizontal part (``<name>_h``, whose outputs are the layer's), the vertical part (``<name>_v``) stays
dense. New rows are named ``<name>_v``/``<name>_h`` (spatial), ``<name>_a``/``<name>_b`` (channel and
svd). Command line: ``python -m perforated.search.lowrank --help``.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import sys
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..files import read_plan_json, save_params_npz, write_json_atomic
from ..ops.masks import Mask, make_mask
from ..graph.model import Model
from ..graph.rows import layer_costs, pair
from ..graph.networks import NETWORKS, Row, next_pool, perforable_layers

METHODS = ("spatial", "channel", "svd")
MASK_KINDS = ("uniform", "grid", "pooling")
Weights = Dict[str, Dict[str, np.ndarray]]


@contextlib.contextmanager
def numpy_blas_threads(n: int = 1):
    """Run numpy's own OpenBLAS (its SVD / eigh) on ``n`` threads inside the block, when that OpenBLAS
    exposes its thread setter (the numpy wheels' scipy-openblas does); otherwise change nothing. On a
    small shared machine multi-threaded LAPACK is many times slower than one thread (measured: eigvalsh
    of a 1536x1536 matrix 0.8 s on one thread, 13 s on two under load)."""
    handles = []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line and "numpy" in line})
        for path in paths:
            lib = ctypes.CDLL(path)
            for suffix in ("64_", ""):
                get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
                put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
                if get is not None and put is not None:
                    handles.append((put, int(get())))
                    put(ctypes.c_int(n))
                    break
    except OSError:
        pass
    try:
        yield
    finally:
        for put, old in handles:
            put(ctypes.c_int(old))


def _one_blas_thread(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with numpy_blas_threads(1):
            return fn(*args, **kwargs)
    return wrapper


# --- single-layer decompositions -------------------------------------------------------------------

def _groups_split(w: np.ndarray, groups: int, fn: str) -> List[np.ndarray]:
    if groups < 1 or w.shape[0] % groups:
        raise ValueError(f"{fn}: groups must divide the {w.shape[0]} filters, got {groups}")
    return np.split(w, groups, axis=0)


def _spectrum(m: np.ndarray) -> np.ndarray:
    """Squared singular values of ``m`` (descending), from the eigenvalues of its smaller Gram matrix."""
    m = np.asarray(m, np.float64)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return np.clip(np.linalg.eigvalsh(gram)[::-1], 0, None)


def _factors(m: np.ndarray, rank: int) -> Tuple[np.ndarray, np.ndarray]:
    """``A (a x K)``, ``B (K x b)`` with ``A @ B`` the best rank-K approximation of ``m`` (the truncated
    SVD), each component scaled so that A's column and B's row have the same norm (``U sqrt(S)``,
    ``sqrt(S) V^T``). Computed from the smaller Gram matrix's eigenvectors (no division by singular
    values, so rank-deficient matrices are reproduced exactly at full rank)."""
    m = np.asarray(m, np.float64)
    if m.shape[0] <= m.shape[1]:
        u = np.linalg.eigh(m @ m.T)[1][:, ::-1][:, :rank]
        a, b = u, u.T @ m
    else:
        v = np.linalg.eigh(m.T @ m)[1][:, ::-1][:, :rank]
        a, b = m @ v, v.T
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=1)
    scale = np.sqrt(np.where(na > 0, nb / np.where(na > 0, na, 1), 1.0))
    scale = np.where(scale > 0, scale, 1.0)
    return a * scale, b / scale[:, None]


def spatial_spectrum(weight: np.ndarray, groups: int = 1) -> np.ndarray:
    """Squared singular values (energy) per rank of the spatial decomposition, summed over groups."""
    out = None
    for wg in _groups_split(np.asarray(weight, np.float64), groups, "spatial_spectrum"):
        n, c, kh, kw = wg.shape
        s = _spectrum(wg.transpose(1, 2, 0, 3).reshape(c * kh, n * kw))
        out = s if out is None else out + s
    return out


def spatial_decompose(weight: np.ndarray, bias: np.ndarray, rank: int, groups: int = 1
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(N, C/g, kh, kw)`` -> vertical ``(g*K, C/g, kh, 1)`` (zero bias) and horizontal
    ``(N, K, 1, kw)`` (the bias): rank ``K`` per group. Returns ``(wv, bv, wh, bh)`` float32."""
    fn = "spatial_decompose"
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"{fn}: weight must be (N, C, kh, kw), got shape {weight.shape}")
    n, c, kh, kw = weight.shape
    ng = n // groups if groups >= 1 and n % groups == 0 else None
    kmax = min(c * kh, (ng or n) * kw)
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= kmax:
        raise ValueError(f"{fn}: rank must be an int in [1, {kmax}] (min(C*kh, N/g*kw)), got {rank!r}")
    vs, hs = [], []
    for wg in _groups_split(np.asarray(weight, np.float64), groups, fn):
        # M[(c, i), (n, j)] = W[n, c, i, j]  ~  sum_k vertical[k, c, i] * horizontal[n, k, j]
        a, b = _factors(wg.transpose(1, 2, 0, 3).reshape(c * kh, ng * kw), rank)
        vs.append(a.T.reshape(rank, c, kh, 1))
        hs.append(b.reshape(rank, ng, 1, kw).transpose(1, 0, 2, 3))
    wv = np.ascontiguousarray(np.concatenate(vs), np.float32)
    wh = np.ascontiguousarray(np.concatenate(hs), np.float32)
    return wv, np.zeros(wv.shape[0], np.float32), wh, np.asarray(bias, np.float32).copy()


def fc_spectrum(weight: np.ndarray) -> np.ndarray:
    return _spectrum(weight)


def fc_decompose(weight: np.ndarray, bias: np.ndarray, rank: int
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(N, F)`` -> ``(K, F)`` ~ ``sqrt(S_K) V_K^T`` (zero bias) then ``(N, K)`` ~ ``U_K sqrt(S_K)``
    (the bias): the truncated SVD ``W ~ U_K S_K V_K^T`` as two FC layers."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"fc_decompose: weight must be (N, F), got shape {weight.shape}")
    kmax = min(weight.shape)
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= kmax:
        raise ValueError(f"fc_decompose: rank must be an int in [1, {kmax}], got {rank!r}")
    u, vt = _factors(weight, rank)
    wa = np.ascontiguousarray(vt, np.float32)
    wb = np.ascontiguousarray(u, np.float32)
    return wa, np.zeros(rank, np.float32), wb, np.asarray(bias, np.float32).copy()


def channel_spectrum(weight: np.ndarray, groups: int = 1, responses: Optional[np.ndarray] = None) -> np.ndarray:
    """Energy per rank of the channel decomposition, summed over groups: eigenvalues of the centred
    response covariance when ``responses`` (``samples x N``) are given, else squared singular values
    of each group's ``(N/g) x (C/g*kh*kw)`` weight matrix."""
    out = None
    if responses is not None:
        for yg in np.split(np.asarray(responses, np.float64), groups, axis=1):
            yc = yg - yg.mean(axis=0)
            e = np.clip(np.linalg.eigvalsh(yc.T @ yc / max(1, len(yc)))[::-1], 0, None)
            out = e if out is None else out + e
        return out
    for wg in _groups_split(np.asarray(weight, np.float64), groups, "channel_spectrum"):
        s = _spectrum(wg.reshape(wg.shape[0], -1))
        s = np.concatenate([s, np.zeros(wg.shape[0] - len(s))])
        out = s if out is None else out + s
    return out


def _reduced_rank_map(y: np.ndarray, y_hat: Optional[np.ndarray], rank: int
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(P, Q, mean_y, mean_y_hat)`` with ``y - mean_y ~ P Q (y_hat - mean_y_hat)``, ``P`` (N x K)
    orthonormal: the rank-K reduced-rank regression of ``y`` on ``y_hat`` (``samples x N`` each).
    Without ``y_hat`` (symmetric): ``Q = P^T``, ``P`` the top-K principal directions of ``y``."""
    mean = y.mean(axis=0)
    yc = y - mean
    if y_hat is None:
        p = np.linalg.eigh(yc.T @ yc)[1][:, ::-1][:, :rank]
        return p, p.T, mean, mean
    mean_hat = y_hat.mean(axis=0)
    xc = y_hat - mean_hat
    gram = xc.T @ xc
    ridge = 1e-6 * max(float(np.trace(gram)) / len(gram), 1e-30)  # dead channels make gram singular
    m_full = np.linalg.solve(gram + ridge * np.eye(len(gram)), xc.T @ yc).T  # least squares: y ~ M y_hat
    fitted = xc @ m_full.T
    p = np.linalg.eigh(fitted.T @ fitted)[1][:, ::-1][:, :rank]
    return p, p.T @ m_full, mean, mean_hat


def channel_decompose(weight: np.ndarray, bias: np.ndarray, rank: int, responses: np.ndarray,
                      groups: int = 1, approx_responses: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(N, C/g, kh, kw)`` -> ``k x k`` part ``(g*K, C/g, kh, kw)`` and 1x1 part ``(N, K, 1, 1)``
    fitted to ``responses`` (``samples x N``: the layer's outputs before ReLU). ``approx_responses``
    (same shape and positions): the layer's outputs, with its original weights, on the input that the
    already decomposed layers before it give; then the fit is asymmetric (module docstring). Returns
    ``(wa, ba, wb, bb)`` float32."""
    fn = "channel_decompose"
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"{fn}: weight must be (N, C, kh, kw), got shape {weight.shape}")
    n = weight.shape[0]
    responses = np.asarray(responses, np.float64)
    if responses.ndim != 2 or responses.shape[1] != n:
        raise ValueError(f"{fn}: responses must be (samples, {n}), got shape {responses.shape}")
    if approx_responses is not None:
        approx_responses = np.asarray(approx_responses, np.float64)
        if approx_responses.shape != responses.shape:
            raise ValueError(f"{fn}: approx_responses must have the shape of responses {responses.shape}, "
                             f"got {approx_responses.shape}")
    ng = n // groups if groups >= 1 and n % groups == 0 else n
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= ng:
        raise ValueError(f"{fn}: rank must be an int in [1, {ng}] (filters per group), got {rank!r}")
    was, bas, wbs, bbs = [], [], [], []
    for g, wg in enumerate(_groups_split(np.asarray(weight, np.float64), groups, fn)):
        cols = slice(g * ng, (g + 1) * ng)
        p, q, mean, mean_hat = _reduced_rank_map(
            responses[:, cols], None if approx_responses is None else approx_responses[:, cols], rank)
        bg = np.asarray(bias, np.float64)[cols]
        was.append(np.tensordot(q, wg, axes=1))          # Q W: (K, C/g, kh, kw)
        bas.append(q @ bg)
        wbs.append(p.reshape(ng, rank, 1, 1))
        bbs.append(mean - p @ (q @ mean_hat))
    f32 = lambda parts: np.ascontiguousarray(np.concatenate(parts), np.float32)
    return f32(was), f32(bas), f32(wbs), f32(bbs)


# --- shapes and costs ------------------------------------------------------------------------------

def _row_map(rows: Sequence[Row]) -> Dict[str, Tuple[str, dict]]:
    return {name: (kind, p) for kind, name, p in rows}


def max_rank(kind: str, p: dict, geo: dict, method: str) -> int:
    """Largest meaningful rank of a layer for a method (per group for grouped convs)."""
    if kind == "fc":
        return min(geo["c_in"], p["out"])
    (kh, kw), g = pair(p["kernel"]), p.get("groups", 1)
    if method == "spatial":
        return min(geo["c_in"] // g * kh, p["out"] // g * kw)
    return p["out"] // g


def decomposed_cost(kind: str, p: dict, geo: dict, method: str, rank: int) -> int:
    """Multiply-adds per image of the two parts at ``rank`` (``geo['positions']`` = computed outputs)."""
    if kind == "fc":
        return rank * (geo["c_in"] + p["out"])
    (kh, kw), (ph, pw) = pair(p["kernel"]), pair(p.get("pad", 0))
    c, n, pos = geo["c_in"], p["out"], geo["positions"]
    if method == "spatial":  # vertical: oh x w_in outputs, g*K filters over C/g; horizontal: N over K
        return rank * (geo["oh"] * geo["w_in"] * c * kh + pos * n * kw)
    return rank * pos * (c * kh * kw + n)


# --- plans -----------------------------------------------------------------------------------------

class LowRankPlan:
    """Per-layer ranks, methods and perforation rates of one network (module docstring for the format)."""

    def __init__(self, network: str, layers: Optional[Dict[str, dict]] = None, **extra):
        if network not in NETWORKS:
            raise ValueError(f"LowRankPlan: network must be one of {sorted(NETWORKS)}, got {network!r}")
        self.network, self.extra = network, dict(extra)
        self.rows = NETWORKS[network]["layers"]()
        self.input_shape = tuple(NETWORKS[network]["input"])
        self.layers: Dict[str, dict] = {}
        _, geo = layer_costs(self.rows, self.input_shape)
        rowmap, perforable = _row_map(self.rows), set(perforable_layers(self.rows))
        for name, spec in (layers or {}).items():
            self.layers[name] = self._check(name, dict(spec), rowmap, geo, perforable)

    def _check(self, name: str, spec: dict, rowmap, geo, perforable) -> dict:
        where = f"LowRankPlan: layers.{name}"
        if name not in rowmap or rowmap[name][0] not in ("conv", "fc"):
            convs = [n for n, (k, _) in rowmap.items() if k in ("conv", "fc")]
            raise ValueError(f"{where}: not a conv or fc layer of {self.network}; layers: {convs}")
        kind, p = rowmap[name]
        rank = spec.get("rank")
        if rank is not None:
            method = spec.get("method", "svd" if kind == "fc" else "spatial")
            allowed = ("svd",) if kind == "fc" else ("spatial", "channel")
            if method not in allowed:
                raise ValueError(f"{where}.method must be one of {allowed} for a {kind} layer, got {method!r}")
            if method == "spatial" and 1 in pair(p["kernel"]):
                raise ValueError(f"{where}: a {pair(p['kernel'])} kernel has no spatial decomposition; "
                                 f"use method 'channel'")
            kmax = max_rank(kind, p, geo[name], method)
            if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= kmax:
                raise ValueError(f"{where}.rank must be an int in [1, {kmax}], got {rank!r}")
            spec["method"] = method
        rate = spec.get("rate", 0.0)
        if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"{where}.rate must be a number in [0, 1), got {rate!r}")
        if rate > 0 and name not in perforable:
            raise ValueError(f"{where}: not perforable (perforable: {sorted(perforable)})")
        mkind = spec.get("kind", "uniform")
        if mkind not in MASK_KINDS:
            raise ValueError(f"{where}.kind must be one of {MASK_KINDS}, got {mkind!r}")
        spec.update(rate=float(rate), kind=mkind, seed=int(spec.get("seed", 0)))
        return spec

    def counts(self) -> Dict[str, int]:
        """Computed output positions of each perforated layer of the original network."""
        _, geo = layer_costs(self.rows, self.input_shape)
        return {n: _make_mask(self.rows, n, s, (geo[n]["oh"], geo[n]["ow"])).count
                for n, s in self.layers.items() if s["rate"] > 0}

    def multiply_adds(self) -> Tuple[int, int]:
        """(original dense, decomposed + perforated) multiply-adds per image."""
        dense, _ = layer_costs(self.rows, self.input_shape)
        rows, _, _ = rewrite_rows(self.rows, self.layers)
        new, _ = layer_costs(rows, self.input_shape, _new_counts(self.layers, self.counts()))
        return dense, new

    def theoretical_speedup(self) -> float:
        dense, new = self.multiply_adds()
        return dense / new

    def to_dict(self) -> dict:
        d = {"network": self.network, **self.extra, "layers": self.layers}
        d["theoretical_speedup"] = round(self.theoretical_speedup(), 4)
        return d

    def save(self, path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "LowRankPlan":
        data = read_plan_json(path, "LowRankPlan.load")
        data.pop("theoretical_speedup", None)  # recomputed: the layers may have been edited
        return cls(data.pop("network"), data.pop("layers", {}), **data)

    def __repr__(self) -> str:
        return f"LowRankPlan({self.network!r}, {self.layers!r})"


def _parts(name: str, method: str) -> Tuple[str, str]:
    return (name + "_v", name + "_h") if method == "spatial" else (name + "_a", name + "_b")


def _masked_part(name: str, spec: dict) -> str:
    """The row that carries a layer's perforation mask after the rewrite."""
    if spec.get("rank") is None:
        return name
    return _parts(name, spec["method"])[1 if spec["method"] == "spatial" else 0]


def _new_counts(layers: Dict[str, dict], counts: Dict[str, int]) -> Dict[str, int]:
    return {_masked_part(n, layers[n]): c for n, c in counts.items()}


def rewrite_rows(rows: Sequence[Row], layers: Dict[str, dict]) -> Tuple[List[Row], Dict[str, Tuple[str, str]], dict]:
    """The decomposed network's rows: each layer with a ``rank`` becomes two rows (module docstring).
    Returns ``(rows, parts, masked)``: ``parts[name] = (first, second)``, ``masked[name]`` the row that
    takes the layer's mask."""
    out: List[Row] = []
    parts: Dict[str, Tuple[str, str]] = {}
    for kind, name, p in rows:
        spec = layers.get(name, {})
        rank = spec.get("rank")
        if rank is None:
            out.append((kind, name, p))
            continue
        method = spec["method"]
        a, b = parts[name] = _parts(name, method)
        if kind == "fc":
            out += [("fc", a, dict(out=rank)), ("fc", b, dict(out=p["out"]))]
            continue
        (kh, kw), (sh, sw), (ph, pw) = pair(p["kernel"]), pair(p.get("stride", 1)), pair(p.get("pad", 0))
        g = p.get("groups", 1)
        if method == "spatial":
            out += [("conv", a, dict(out=g * rank, kernel=(kh, 1), stride=(sh, 1), pad=(ph, 0), groups=g)),
                    ("conv", b, dict(out=p["out"], kernel=(1, kw), stride=(1, sw), pad=(0, pw), groups=g))]
        else:
            out += [("conv", a, dict(out=g * rank, kernel=(kh, kw), stride=(sh, sw), pad=(ph, pw), groups=g)),
                    ("conv", b, dict(out=p["out"], kernel=1, stride=1, pad=0, groups=g))]
    masked = {n: _masked_part(n, s) for n, s in layers.items()}
    return out, parts, masked


# --- responses, rank selection ---------------------------------------------------------------------

def network_weights(network: str, weights=None, seed: int = 0) -> Weights:
    """Weights of a named network: loaded from ``weights`` (an .npz of Model.save_weights or a dict),
    else random (He, seeded) as the Model draws them."""
    return dict(Model(network, 1, weights=weights, seed=seed).params)


def layer_responses(rows: Sequence[Row], weights: Weights, input_shape, classes: int, names: Sequence[str],
                    images: np.ndarray, samples: int = 8192, seed: int = 0) -> Dict[str, np.ndarray]:
    """Outputs before ReLU of conv / fc layers ``names`` on ``images`` (``B x C x H x W``), as
    ``(samples, channels)`` float64 arrays (positions drawn at random when there are more)."""
    images = np.ascontiguousarray(images, np.float32)
    rows = list(rows)
    wanted = [i for i, (_, name, _) in enumerate(rows) if name in names]
    if wanted and wanted[-1] + 1 < len(rows):  # nothing after the last asked layer needs to run
        rows = rows[:wanted[-1] + 1]
        kind, last, p = rows[-1]
        if kind == "conv":
            geo = layer_costs(rows, input_shape)[1][last]
            classes = p["out"] * geo["oh"] * geo["ow"]
        else:
            classes = p["out"]
    # the layer steps keep every layer's input (the channels-last engine keeps none)
    model = Model(rows, images.shape[0], weights={n: weights[n] for _, n, _ in rows if n in weights},
                  input_shape=input_shape, classes=classes, inference="layers")
    model.forward(images)
    out = {}
    for step in model.steps:
        if step.name not in names:
            continue
        # positions drawn per layer name: the same ones whichever other layers are asked for, so the
        # responses of one layer in the original and in a partly decomposed network pair up
        rng = np.random.default_rng([seed, zlib.crc32(step.name.encode())])
        w = weights[step.name]
        if step.kind == "conv":
            buf = np.empty(step._y_view.shape, np.float32)
            step.plan.forward(step._x_view, w["weight"], w["bias"], out=buf)
            y = buf.reshape(buf.shape[0], buf.shape[1], -1).transpose(0, 2, 1).reshape(-1, buf.shape[1])
        else:
            y = step._x2 @ w["weight"].T + w["bias"]
        if len(y) > samples:
            y = y[rng.choice(len(y), samples, replace=False)]
        out[step.name] = np.asarray(y, np.float64)
    return out


def default_candidates(rows: Sequence[Row], method: str) -> List[str]:
    """Layers rank selection decomposes by default: convs with a kernel larger than 1x1 (both sides
    larger than 1 for the spatial method)."""
    names = []
    for kind, name, p in rows:
        if kind == "conv":
            k = pair(p["kernel"])
            if (method == "spatial" and min(k) > 1) or (method == "channel" and k != (1, 1)):
                names.append(name)
    return names


def select_ranks(layers: Dict[str, dict], budget: float) -> Dict[str, Optional[int]]:
    """Greedy rank selection. ``layers[name]`` = ``{"energy": spectrum (descending), "unit": multiply-adds
    per unit of rank, "orig": multiply-adds undecomposed, "kmax": largest rank}``; ``budget``: the most
    multiply-adds the layers may cost together. Returns ``{name: rank or None (kept whole)}``."""
    state: Dict[str, Optional[int]] = {n: None for n in layers}
    logs = {}
    for n, L in layers.items():
        e = np.maximum(np.asarray(L["energy"], np.float64)[:L["kmax"]], 0)
        cum = np.cumsum(e) / max(e.sum(), 1e-300)
        logs[n] = np.log(np.maximum(cum, 1e-300))       # logs[n][k-1] = log kept fraction at rank k
    total = sum(L["orig"] for L in layers.values())

    entry: Dict[str, object] = {}

    def move(n):
        L, r = layers[n], state[n]
        if r is None:
            if n not in entry:
                entry[n] = enter(n)
            return entry[n]
        if r <= 1:
            return None
        return r - 1, logs[n][r - 1] - logs[n][r - 2], L["unit"]

    def enter(n):
        # Entering a layer: the rank with the least loss per saved multiply-add. The first rank that is
        # cheaper than the whole layer may lose much energy for little saving (log energy is concave
        # in the rank, the saving is not proportional to it from the undecomposed state).
        L = layers[n]
        k0 = min(L["kmax"], int(math.ceil(L["orig"] / L["unit"])) - 1)
        if k0 < 1:
            return None
        ks = np.arange(1, k0 + 1)
        k = int(ks[np.argmin(-logs[n][:k0] / (L["orig"] - ks * L["unit"]))])
        return k, -logs[n][k - 1], L["orig"] - k * L["unit"]

    while total > budget:
        best = None
        for n in layers:
            m = move(n)
            if m is not None and m[2] > 0:
                key = (m[1] / m[2], -m[2])
                if best is None or key < best[0]:
                    best = (key, n, m)
        if best is None:
            raise ValueError(f"select_ranks: the budget {budget:.4g} multiply-adds cannot be met: rank 1 "
                             f"everywhere still costs {total:.4g}")
        _, n, (k, _, saved) = best
        state[n] = k
        total -= saved
    while True:  # the last jump may overshoot: give rank back where it gains the most energy per cost
        best = None
        for n, r in state.items():
            L = layers[n]
            if r is not None and r < L["kmax"] and total + L["unit"] <= budget and \
                    (r + 1) * L["unit"] < L["orig"]:
                gain = (logs[n][r] - logs[n][r - 1]) / L["unit"]
                if best is None or gain > best[0]:
                    best = (gain, n)
        if best is None:
            return state
        state[best[1]] += 1
        total += layers[best[1]]["unit"]


@_one_blas_thread
def plan_for_ratio(network: str, ratio: float, method: str = "spatial", weights: Optional[Weights] = None,
                   rate: float = 0.0, mask_kind: str = "uniform", seed: int = 0,
                   layers: Optional[Sequence[str]] = None, images: Optional[np.ndarray] = None) -> LowRankPlan:
    """Rank selection for a named network: the whole network's multiply-adds (after the perforation
    ``rate`` on every perforable layer, if any) at most ``original / ratio``. ``weights`` default to
    the network's random weights (seed 0); ``images`` give response energies (channel method)."""
    if method not in ("spatial", "channel"):
        raise ValueError(f"plan_for_ratio: method must be 'spatial' or 'channel', got {method!r}")
    if not ratio >= 1.0:
        raise ValueError(f"plan_for_ratio: ratio must be >= 1, got {ratio!r}")
    info = NETWORKS[network]
    rows, input_shape = info["layers"](), tuple(info["input"])
    weights = weights if weights is not None else network_weights(network)
    names = list(layers) if layers is not None else default_candidates(rows, method)
    specs = {n: {"rate": rate, "kind": mask_kind, "seed": seed + i}
             for i, n in enumerate(perforable_layers(rows))} if rate > 0 else {}
    base = LowRankPlan(network, specs)
    dense, _ = layer_costs(rows, input_shape)
    perforated_total, geo = layer_costs(rows, input_shape, base.counts())
    rowmap = _row_map(rows)
    responses = {}
    if images is not None and method == "channel":
        responses = layer_responses(rows, weights, input_shape, info["classes"], names, images)
    cand = {}
    for n in names:
        kind, p = rowmap[n]
        m = "svd" if kind == "fc" else method
        g = p.get("groups", 1) if kind == "conv" else 1
        w = weights[n]["weight"]
        if m == "spatial":
            energy = spatial_spectrum(w, g)
        elif m == "channel":
            energy = channel_spectrum(w, g, responses.get(n))
        else:
            energy = fc_spectrum(w)
        cand[n] = dict(energy=energy, unit=decomposed_cost(kind, p, geo[n], m, 1), orig=geo[n]["macs"],
                       kmax=max_rank(kind, p, geo[n], m), method=m)
    fixed = perforated_total - sum(c["orig"] for c in cand.values())
    ranks = select_ranks(cand, dense / ratio - fixed)
    for n, r in ranks.items():
        if r is not None:
            specs.setdefault(n, {})
            specs[n].update(rank=int(r), method=cand[n]["method"])
    return LowRankPlan(network, specs, ratio=ratio, method=method, rate=rate)


# --- applying a plan -------------------------------------------------------------------------------

@_one_blas_thread
def decompose(rows: Sequence[Row], weights: Weights, layers: Dict[str, dict], input_shape, classes: int,
              images: Optional[np.ndarray] = None, fit_batch: int = 4, seed: int = 0,
              asymmetric: bool = True) -> Tuple[List[Row], Weights]:
    """Rewrite ``rows`` and ``weights`` by the plan's ``layers`` (ranks; rates are ignored here).
    Channel decompositions are fitted on ``images``, or on ``fit_batch`` random normal images; in
    network order and, when ``asymmetric``, each on the responses of the network decomposed so far."""
    new_rows, parts, _ = rewrite_rows(rows, layers)
    rowmap = _row_map(rows)
    order = [name for _, name, _ in rows if name in parts]
    channel = [n for n in order if layers[n]["method"] == "channel"]
    responses = {}
    if channel:
        if images is None:
            images = np.random.default_rng(seed).standard_normal((fit_batch,) + tuple(input_shape), np.float32)
        responses = layer_responses(rows, weights, input_shape, classes, channel, images, seed=seed)
    new = {n: w for n, w in weights.items() if n not in parts}
    for i, n in enumerate(order):
        spec, (kind, p) = layers[n], rowmap[n]
        w, bias, g = weights[n]["weight"], weights[n]["bias"], p.get("groups", 1)
        if spec["method"] == "svd":
            wa, ba, wb, bb = fc_decompose(w, bias, spec["rank"])
        elif spec["method"] == "spatial":
            wa, ba, wb, bb = spatial_decompose(w, bias, spec["rank"], g)
        else:
            approx = None
            if asymmetric and i > 0:  # the input differs from the original's once a layer before is cut
                done = {m: layers[m] for m in order[:i]}
                partial_rows, _, _ = rewrite_rows(rows, done)
                partial_w = dict(new, **{m: weights[m] for m in weights if m not in new and m not in done})
                approx = layer_responses(partial_rows, partial_w, input_shape, classes, [n], images, seed=seed)[n]
            wa, ba, wb, bb = channel_decompose(w, bias, spec["rank"], responses[n], g, approx)
        a, b = parts[n]
        new[a], new[b] = {"weight": wa, "bias": ba}, {"weight": wb, "bias": bb}
    return new_rows, new


def build_masks(new_rows: Sequence[Row], layers: Dict[str, dict], input_shape) -> Dict[str, Mask]:
    """Masks of the rewritten network: each perforated layer's mask on the row that carries it."""
    _, geo = layer_costs(new_rows, input_shape)
    masks = {}
    for n, spec in layers.items():
        if spec.get("rate", 0) <= 0:
            continue
        target = _masked_part(n, spec)
        masks[target] = _make_mask(new_rows, target, spec, (geo[target]["oh"], geo[target]["ow"]))
    return masks


def _make_mask(rows: Sequence[Row], name: str, spec: dict, size: Tuple[int, int]) -> Mask:
    if spec["kind"] == "pooling":
        pool = next_pool(list(rows), name)
        return make_mask("pooling", size, spec["rate"], spec["seed"],
                         pool=(pool["kernel"], pool["stride"], pool.get("pad", 0)))
    return make_mask(spec["kind"], size, spec["rate"], spec["seed"])


def plan_model(plan: LowRankPlan, batch: int, weights=None, seed: int = 0, device: str = "cpu") -> Model:
    """The model of a plan's rewritten network (with its masks) at ``batch``, holding ``weights``
    already decomposed (a dict or an .npz of the rewritten layers' names; random when None): to
    fine-tune or evaluate a decomposed network without fitting it again."""
    rows, _, _ = rewrite_rows(plan.rows, plan.layers)
    masks = build_masks(rows, plan.layers, plan.input_shape)
    return Model(rows, batch, masks=masks, weights=weights, seed=seed, input_shape=plan.input_shape,
                 classes=NETWORKS[plan.network]["classes"], device=device)


def apply_plan(plan: LowRankPlan, batch: int, weights: Optional[Weights] = None,
               images: Optional[np.ndarray] = None, seed: int = 0, asymmetric: bool = True
               ) -> Tuple[Model, Weights]:
    """The decomposed (and perforated) model of a plan at ``batch``, and its weights."""
    info = NETWORKS[plan.network]
    weights = weights if weights is not None else network_weights(plan.network)
    _, new_w = decompose(plan.rows, weights, plan.layers, plan.input_shape, info["classes"], images, seed=seed,
                         asymmetric=asymmetric)
    return plan_model(plan, batch, new_w), new_w


def save_weights(weights: Weights, path, preprocess_of=None) -> None:
    """Weights as ``.npz`` in the Model.save_weights format (``name/weight``, ``name/bias``), with the
    input normalisation (``_preprocess``) of the weights file ``preprocess_of`` when it stores one, so
    that training and evaluation of the decomposed network normalise as the original's did."""
    path = Path(path)
    extra = {}
    if preprocess_of is not None and Path(preprocess_of).suffix == ".npz":
        with np.load(preprocess_of) as data:
            if "_preprocess" in data.files:
                extra["_preprocess"] = data["_preprocess"]
    save_params_npz(path, weights, **extra)


def fit_images(data, weights_path, n: int = 128) -> np.ndarray:
    """Images to fit channel decompositions and rank energies on: a ``.npy`` array, or ``n`` seeded
    training images of a dataset (None: the default CIFAR-10) normalised as ``weights_path`` expects."""
    if data is not None and Path(data).suffix == ".npy":
        return np.load(data).astype(np.float32)
    from ..data import training_subsets

    [(x, _)] = training_subsets(data, weights_path, [n], seed=7)
    return x


# --- command line ----------------------------------------------------------------------------------

def _measure(plan: LowRankPlan, batch: int, weights: Weights, repeat: int, images=None) -> dict:
    import time

    def timed(model: Model) -> float:
        model.x[...] = np.random.default_rng(1).standard_normal(model.x.shape, dtype=np.float32)
        model.forward()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            model.forward()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    base = Model(plan.network, batch, weights=weights)
    t0 = timed(base)
    ref = base.logits.copy()
    new, new_w = apply_plan(plan, batch, weights, images)
    t1 = timed(new)
    dense, macs = plan.multiply_adds()
    assert new.multiply_adds() == macs, (new.multiply_adds(), macs)
    err = float(np.linalg.norm(new.logits - ref) / max(np.linalg.norm(ref), 1e-30))
    return {"batch": batch, "dense_seconds": t0, "seconds": t1, "measured_speedup": t0 / t1,
            "theoretical_speedup": dense / macs, "multiply_adds": macs, "dense_multiply_adds": dense,
            "logits_relative_error": err, "weights": new_w}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perforated.search.lowrank", description=__doc__.split("\n\n")[0],
        epilog="examples:\n  python -m perforated.search.lowrank --network vgg16 --ratio 2 --save-plan plan.json\n"
               "  python -m perforated.search.lowrank --network vgg16 --config plan.json --batch 2 --save-weights w.npz\n"
               "  python -m perforated.search.lowrank --network alexnet --layer conv2 --rank 32\n"
               "  python -m perforated.search.lowrank --network alexnet --layer fc6 --rank 512",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", required=True, choices=sorted(NETWORKS))
    parser.add_argument("--weights", type=Path, help="weights .npz (Model.save_weights format); default random")
    parser.add_argument("--ratio", type=float, help="rank selection: network multiply-adds <= original / ratio")
    parser.add_argument("--method", choices=("spatial", "channel"), default="spatial",
                        help="conv decomposition (default spatial, as accnn)")
    parser.add_argument("--layers", help="comma-separated layers rank selection may decompose (default: all "
                                         "convs larger than 1x1)")
    parser.add_argument("--perforation-rate", type=float, default=0.0,
                        help="also perforate every perforable layer at this rate (combined plan)")
    parser.add_argument("--mask-kind", choices=MASK_KINDS, default="uniform")
    parser.add_argument("--layer", help="single layer (accnn acc_conv / acc_fc): decompose only this one")
    parser.add_argument("--rank", type=int, help="rank for --layer")
    parser.add_argument("--config", type=Path, help="apply this plan JSON")
    parser.add_argument("--save-plan", type=Path, help="write the plan JSON here")
    parser.add_argument("--save-weights", type=Path, help="write the decomposed weights (.npz) here")
    parser.add_argument("--data", type=Path, help="images to fit channel decompositions and rank energies on: "
                        "a .npy array (B, C, H, W), or a dataset (CIFAR-10 tarball, image folder, "
                        "cifar-10-batches-py) whose training images are normalised as --weights expect "
                        "(default: random images)")
    parser.add_argument("--fit-images", type=int, default=128, help="training images taken from a --data dataset")
    parser.add_argument("--batch", type=int, default=None, help="batch for --measure (default: 2)")
    parser.add_argument("--measure", action="store_true", help="time original vs decomposed on random input")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    modes = sum(x is not None for x in (args.ratio, args.config, args.layer))
    if modes != 1:
        parser.error("give exactly one of --ratio, --config, --layer")
    if args.layer is not None and args.rank is None:
        parser.error("--layer needs --rank")
    weights = network_weights(args.network, args.weights)
    images = fit_images(args.data, args.weights, args.fit_images) if args.data else None
    if args.config is not None:
        plan = LowRankPlan.load(args.config)
        if plan.network != args.network:
            parser.error(f"--config: the plan is for {plan.network}, not {args.network}")
    elif args.layer is not None:
        kind = _row_map(NETWORKS[args.network]["layers"]()).get(args.layer, ("?", None))[0]
        method = "svd" if kind == "fc" else args.method
        plan = LowRankPlan(args.network, {args.layer: {"rank": args.rank, "method": method}})
    else:
        layers = args.layers.split(",") if args.layers else None
        plan = plan_for_ratio(args.network, args.ratio, args.method, weights, args.perforation_rate,
                              args.mask_kind, layers=layers, images=images)
    text = json.dumps(plan.to_dict(), indent=2)
    if args.save_plan:
        plan.save(args.save_plan)
        print(f"wrote {args.save_plan} (theoretical speedup {plan.theoretical_speedup():.3f})", file=sys.stderr)
    else:
        print(text)
    if args.measure or args.save_weights or args.config is not None or args.layer is not None:
        batch = args.batch or 2
        if args.measure or args.config is not None:
            r = _measure(plan, batch, weights, args.repeat, images)
            new_w = r.pop("weights")
            print(json.dumps(r, indent=2))
        else:
            _, new_w = apply_plan(plan, 1, weights, images)
        if args.save_weights:
            save_weights(new_w, args.save_weights, preprocess_of=args.weights)
            print(f"wrote {args.save_weights}", file=sys.stderr)


if __name__ == "__main__":
    main()
