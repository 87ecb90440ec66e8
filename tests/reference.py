"""Float64 numpy references: every operation defined by its meaning, written for clarity, not speed.

perforated conv = dense conv, gathered at the mask's computed positions, then nearest-neighbour filled.
Implicit input = interpolate the compact input to the full map, then the dense operation.
Backward functions are the exact adjoints of these definitions (validated by finite differences in
test_reference.py), so the C library's gradients are compared against them.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def pair(v) -> Tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


# --- interpolation -------------------------------------------------------------------------------

def interp(compact: np.ndarray, nearest: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """(N, C, count) -> (N, C, h, w): y[..., p] = compact[..., nearest[p]]."""
    compact = np.asarray(compact, np.float64)
    return compact[:, :, nearest].reshape(compact.shape[:2] + tuple(shape))


def interp_backward(dy: np.ndarray, nearest: np.ndarray, count: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, count): dc[..., k] = sum of dy[..., p] over nearest[p] == k."""
    n, c = dy.shape[:2]
    flat = np.asarray(dy, np.float64).reshape(n, c, -1)
    out = np.zeros((n, c, count))
    np.add.at(out, (slice(None), slice(None), nearest), flat)
    return out


# --- convolution ---------------------------------------------------------------------------------

def conv_out_size(in_size, kernel, stride, pad, dilation=1) -> Tuple[int, int]:
    (h, w), (kh, kw), (sh, sw), (ph, pw) = pair(in_size), pair(kernel), pair(stride), pair(pad)
    dh, dw = pair(dilation)
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def _windows(xp, ki, kj, oh, ow, sh, sw, dh=1, dw=1):
    return xp[:, :, ki * dh:ki * dh + sh * (oh - 1) + 1:sh, kj * dw:kj * dw + sw * (ow - 1) + 1:sw]


def conv2d(x, w, b=None, stride=1, pad=0, groups=1, dilation=1) -> np.ndarray:
    """Dense cross-correlation (Caffe), float64. x (N, C, H, W), w (Co, C/g, kh, kw)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    assert cg * groups == c and co % groups == 0
    oh, ow = conv_out_size((h, wd), (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, co, oh, ow))
    og = co // groups
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og]
        for ki in range(kh):
            for kj in range(kw):
                y[:, g * og:(g + 1) * og] += np.einsum(
                    "ncij,oc->noij", _windows(xg, ki, kj, oh, ow, sh, sw, dh, dw), wg[:, :, ki, kj])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(x, w, dy, stride=1, pad=0, groups=1, dilation=1):
    """(dx, dw, db) of the dense conv, float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    (sh, sw), (ph, pw), (dh, dw_) = pair(stride), pair(pad), pair(dilation)
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    oh, ow = dy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    og = co // groups
    for g in range(groups):
        cs, os_ = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for ki in range(kh):
            for kj in range(kw):
                win = _windows(xp[:, cs], ki, kj, oh, ow, sh, sw, dh, dw_)
                dw[os_, :, ki, kj] = np.einsum("noij,ncij->oc", dy[:, os_], win)
                _windows(dxp[:, cs], ki, kj, oh, ow, sh, sw, dh, dw_)[...] += np.einsum(
                    "noij,oc->ncij", dy[:, os_], w[os_, :, ki, kj])
    dx = dxp[:, :, ph:ph + h, pw:pw + wd]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def perforated_conv2d(x, w, b=None, stride=1, pad=0, groups=1, mask=None, input_mask=None,
                      compact=False, dilation=1):
    """Reference of perforated.ops.conv2d. Masks are (indices, nearest, shape) via .indices etc."""
    if input_mask is not None:
        x = interp(x, input_mask.nearest, input_mask.shape)
    y = conv2d(x, w, b, stride, pad, groups, dilation)
    if mask is None:
        return y
    n, co = y.shape[:2]
    y_c = y.reshape(n, co, -1)[:, :, mask.indices]
    return y_c if compact else interp(y_c, mask.nearest, mask.shape)


def perforated_conv2d_backward(x, w, dy, stride=1, pad=0, groups=1, mask=None, input_mask=None,
                               compact=False, dilation=1):
    """(dx, dw, db) of perforated_conv2d (dx in x's layout)."""
    x_full = interp(x, input_mask.nearest, input_mask.shape) if input_mask is not None else x
    n, co = dy.shape[:2]
    if mask is not None:
        dy_c = dy if compact else interp_backward(dy, mask.nearest, mask.count)
        oh, ow = mask.shape
        dense = np.zeros((n, co, oh * ow))
        dense[:, :, mask.indices] = dy_c
        dy = dense.reshape(n, co, oh, ow)
    dx, dw, db = conv2d_backward(x_full, w, dy, stride, pad, groups, dilation)
    if input_mask is not None:
        dx = interp_backward(dx, input_mask.nearest, input_mask.count)
    return dx, dw, db


# --- pooling (Caffe ceil mode) -------------------------------------------------------------------

def pool_out_size(in_size, kernel, stride, pad) -> Tuple[int, int]:
    """Caffe ceil mode; the last window must start inside the map. Caffe applies that cut only when
    pad > 0; we apply it always, which differs from Caffe only when pad == 0 and stride > kernel
    leaves an empty last window (Caffe then outputs -FLT_MAX / divides by a non-positive size)."""
    out = []
    for n, k, s, p in zip(pair(in_size), pair(kernel), pair(stride), pair(pad)):
        o = int(math.ceil((n + 2 * p - k) / s)) + 1
        if (o - 1) * s >= n + p:
            o -= 1
        out.append(o)
    return out[0], out[1]


def _pool_windows(in_size, kernel, stride, pad):
    """For each output (i, j): the in-bounds row range and col range of its window."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = pair(in_size), pair(kernel), pair(stride), pair(pad)
    oh, ow = pool_out_size((h, w), (kh, kw), (sh, sw), (ph, pw))
    for i in range(oh):
        r0 = i * sh - ph
        rows = range(max(r0, 0), min(r0 + kh, h))
        for j in range(ow):
            c0 = j * sw - pw
            yield i, j, rows, range(max(c0, 0), min(c0 + kw, w))


def pool2d(x, kernel, stride, pad=0, mode="max"):
    """Max / average pooling; average divides by the number of in-bounds positions."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    oh, ow = pool_out_size((h, w), kernel, stride, pad)
    y = np.empty((n, c, oh, ow))
    for i, j, rows, cols in _pool_windows((h, w), kernel, stride, pad):
        win = x[:, :, rows.start:rows.stop, cols.start:cols.stop]
        y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
    return y


def pool2d_backward(x, dy, kernel, stride, pad=0, mode="max"):
    """dx of pool2d; max routes to the first maximum of the window (row-major)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    n, c, h, w = x.shape
    dx = np.zeros_like(x)
    for i, j, rows, cols in _pool_windows((h, w), kernel, stride, pad):
        win = x[:, :, rows.start:rows.stop, cols.start:cols.stop]
        if mode == "max":
            flat = win.reshape(n, c, -1)
            arg = flat.argmax(axis=2)
            r = rows.start + arg // len(cols)
            q = cols.start + arg % len(cols)
            for a in range(n):
                for b in range(c):
                    dx[a, b, r[a, b], q[a, b]] += dy[a, b, i, j]
        else:
            dx[:, :, rows.start:rows.stop, cols.start:cols.stop] += \
                dy[:, :, i, j][:, :, None, None] / (len(rows) * len(cols))
    return dx


def perforated_pool2d(x, kernel, stride, pad=0, mode="max", input_mask=None):
    """Pooling of a compact input read through input_mask == pooling of the interpolated input
    (max over distinct compact values equals max over the filled window)."""
    if input_mask is not None:
        x = interp(x, input_mask.nearest, input_mask.shape)
    return pool2d(x, kernel, stride, pad, mode)


def perforated_pool2d_backward(x, dy, kernel, stride, pad=0, mode="max", input_mask=None):
    if input_mask is None:
        return pool2d_backward(x, dy, kernel, stride, pad, mode)
    full = interp(x, input_mask.nearest, input_mask.shape)
    dfull = pool2d_backward(full, dy, kernel, stride, pad, mode)
    return interp_backward(dfull, input_mask.nearest, input_mask.count)


def pooling_scores(in_size, kernel, stride, pad=0) -> np.ndarray:
    """Number of (clipped, Caffe ceil mode) pooling windows containing each position."""
    h, w = pair(in_size)
    s = np.zeros((h, w), np.int64)
    for _, _, rows, cols in _pool_windows((h, w), kernel, stride, pad):
        s[rows.start:rows.stop, cols.start:cols.stop] += 1
    return s


# --- LRN, softmax cross-entropy, fully connected -------------------------------------------------

def _lrn_scale(x, size, alpha, k):
    n, c = x.shape[:2]
    sq = x.reshape(n, c, -1) ** 2
    half = size // 2
    acc = np.zeros_like(sq)
    for ch in range(c):
        acc[:, ch] = sq[:, max(0, ch - half):min(c, ch + half + 1)].sum(axis=1)
    return (k + alpha / size * acc).reshape(x.shape)


def lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    x = np.asarray(x, np.float64)
    return x * _lrn_scale(x, size, alpha, k) ** -beta


def lrn_backward(x, dy, size=5, alpha=1e-4, beta=0.75, k=1.0):
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    scale = _lrn_scale(x, size, alpha, k)
    y = x * scale ** -beta
    n, c = x.shape[:2]
    t = (dy * y / scale).reshape(n, c, -1)
    half = size // 2
    acc = np.zeros_like(t)
    for ch in range(c):
        acc[:, ch] = t[:, max(0, ch - half):min(c, ch + half + 1)].sum(axis=1)
    return dy * scale ** -beta - 2.0 * alpha * beta / size * x * acc.reshape(x.shape)


def softmax_xent(logits, labels):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(prob[np.arange(len(labels)), labels])
    return prob, loss


def softmax_xent_backward(logits, labels, scale=1.0):
    prob, _ = softmax_xent(logits, labels)
    prob[np.arange(len(labels)), labels] -= 1.0
    return prob * scale


def linear(x, w, b=None):
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    return y if b is None else y + np.asarray(b, np.float64)


def linear_backward(x, w, dy):
    x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
    return dy @ w, dy.T @ x, dy.sum(axis=0)


# --- masks ---------------------------------------------------------------------------------------

def nearest_distances(shape, indices, nearest):
    """(distance to the assigned position, minimal distance to any computed position), squared."""
    h, w = shape
    rows, cols = np.divmod(np.arange(h * w), w)
    kr, kc = np.divmod(np.asarray(indices), w)
    d2 = (rows[:, None] - kr[None, :]) ** 2 + (cols[:, None] - kc[None, :]) ** 2
    return d2[np.arange(h * w), nearest], d2.min(axis=1)


def count_for_rate(h, w, rate) -> Tuple[int, int]:
    """The admissible counts max(1, floor((1-r)hw)) allowing for a rounding at an exact integer."""
    v = (1.0 - rate) * h * w
    return max(1, math.floor(v - 1e-9)), max(1, math.floor(v + 1e-9))
