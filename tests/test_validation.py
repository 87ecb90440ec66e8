"""Every validation path: the exception type and a message naming the argument and the values.

Python checks (dtype, ndim, shape, contiguity, writability) happen before any C call; geometry
checks come from the C library (InvalidArgumentError, a ValueError, carrying perf_last_error()).
"""
from __future__ import annotations

import numpy as np
import pytest

import perforated as P
from perforated import ffi, lib

f32 = np.float32


def zeros(*shape, dtype=f32):
    return np.zeros(shape, dtype)


X = zeros(2, 3, 7, 8)
W = zeros(4, 3, 3, 3)


# --- array checks (Python) -----------------------------------------------------------------------

def test_wrong_dtype_names_argument():
    with pytest.raises(TypeError, match=r"conv2d: x must be float32, got float64"):
        P.conv2d(X.astype(np.float64), W)
    with pytest.raises(TypeError, match=r"conv2d: weight must be float32, got float16"):
        P.conv2d(X, W.astype(np.float16))
    with pytest.raises(TypeError, match=r"conv2d: bias must be float32, got int64"):
        P.conv2d(X, W, np.zeros(4, np.int64))
    with pytest.raises(TypeError, match=r"relu: x must be float32"):
        P.relu(np.zeros(3))
    with pytest.raises(TypeError, match=r"max_pool2d: x must be float32"):
        P.max_pool2d(X.astype(np.float64), 2, 2)


def test_not_an_array():
    with pytest.raises(TypeError, match=r"conv2d: x must be a numpy.ndarray, got list"):
        P.conv2d([[1.0]], W)
    with pytest.raises(TypeError, match=r"linear: weight must be a numpy.ndarray"):
        P.linear(zeros(2, 3), None)
    with pytest.raises(TypeError, match=r"interpolate: mask must be a perforated.Mask"):
        P.interpolate(zeros(1, 1, 3), "mask")
    with pytest.raises(TypeError, match=r"mask must be a perforated.Mask or None"):
        P.conv2d(X, W, mask=np.arange(3))


def test_wrong_ndim_and_shape():
    with pytest.raises(ValueError, match=r"conv2d: x must have 4 dimensions, got 3"):
        P.conv2d(zeros(3, 7, 8), W)
    with pytest.raises(ValueError,
                       match=r"conv2d: weight must have shape \(4, 3, 3, 3\), got \(4, 2, 3, 3\)"):
        P.conv2d(X, zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(4,\), got \(5,\)"):
        P.conv2d(X, W, zeros(5))
    with pytest.raises(ValueError, match=r"conv2d: out must have shape \(2, 4, 5, 6\), got \(2, 4, 5, 5\)"):
        P.conv2d(X, W, out=zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"linear: weight must have shape \(5, 3\), got \(5, 4\)"):
        P.linear(zeros(2, 3), zeros(5, 4))
    with pytest.raises(ValueError, match=r"relu_backward: dy must have shape"):
        P.relu_backward(zeros(3, 4), zeros(4, 3))
    with pytest.raises(ValueError, match=r"lrn: x must have 3 or 4 dimensions, got 2"):
        P.lrn(zeros(3, 4))


def test_compact_input_shape_must_match_input_mask():
    m = P.make_mask("uniform", (7, 8), 0.5)
    with pytest.raises(ValueError, match=rf"conv2d: x must have shape \(\*, \*, {m.count}\)"):
        P.conv2d(zeros(2, 3, m.count + 1), W, input_mask=m)
    with pytest.raises(ValueError, match=r"conv2d: x must have 3 dimensions"):
        P.conv2d(X, W, input_mask=m)  # a full x with an input mask
    with pytest.raises(ValueError, match=rf"max_pool2d: x must have shape \(\*, \*, {m.count}\)"):
        P.max_pool2d(zeros(2, 3, m.count - 1), 2, 2, input_mask=m)
    with pytest.raises(ValueError, match=rf"interpolate: compact must have shape \(2, 3, {m.count}\)"):
        P.interpolate(zeros(2, 3, 5), m)
    with pytest.raises(ValueError, match=r"interpolate_backward: dy must have shape \(2, 3, 7, 8\)"):
        P.interpolate_backward(zeros(2, 3, 8, 7), m)


def test_non_contiguous_rejected_never_copied():
    xt = np.zeros((2, 3, 8, 7), f32).transpose(0, 1, 3, 2)
    with pytest.raises(ValueError, match=r"conv2d: x must be C-contiguous"):
        P.conv2d(xt, W)
    with pytest.raises(ValueError, match=r"relu: x must be C-contiguous"):
        P.relu(zeros(4, 6)[:, ::2])
    out = zeros(2, 4, 5, 12)[..., ::2]
    with pytest.raises(ValueError, match=r"conv2d: out must be C-contiguous"):
        P.conv2d(X, W, out=out)


def test_out_must_be_float32_and_writable():
    with pytest.raises(TypeError, match=r"relu: out must be float32, got float64"):
        P.relu(zeros(3), out=np.zeros(3))
    ro = zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"relu: out must be writable"):
        P.relu(zeros(3), out=ro)


def test_compact_requires_mask():
    with pytest.raises(ValueError, match=r"conv2d: compact=True requires a mask"):
        P.conv2d(X, W, compact=True)
    with pytest.raises(ValueError, match=r"conv2d_backward: compact=True requires a mask"):
        P.conv2d_backward(X, W, zeros(2, 4, 5, 6), compact=True)


def test_conv_backward_dy_shape():
    m = P.make_mask("uniform", (5, 6), 0.5)
    with pytest.raises(ValueError, match=r"conv2d_backward: dy must have shape \(2, 4, 5, 6\)"):
        P.conv2d_backward(X, W, zeros(2, 4, m.count), mask=m)  # compact dy without compact=True
    with pytest.raises(ValueError, match=rf"conv2d_backward: dy must have shape \(2, 4, {m.count}\)"):
        P.conv2d_backward(X, W, zeros(2, 4, 5, 6), mask=m, compact=True)


def test_int_arguments():
    with pytest.raises(TypeError, match=r"stride must be an int, got float"):
        P.conv2d(X, W, stride=1.5)
    with pytest.raises(ValueError, match=r"pad must be an int or a pair"):
        P.conv2d(X, W, pad=(1, 1, 1))


# --- geometry checks (C messages) ----------------------------------------------------------------

def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"kernel 11x11 exceeds padded input 7x8") as e:
        P.conv2d(X, zeros(4, 3, 11, 11))
    assert isinstance(e.value, P.InvalidArgumentError)
    assert "perf_conv_plan_create" in str(e.value)
    with pytest.raises(ValueError, match=r"kernel"):
        P.max_pool2d(zeros(1, 1, 3, 3), 5, 1)


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match=r"groups \(2\) must divide in_channels \(3\)"):
        P.conv2d(X, zeros(4, 1, 3, 3), groups=2)
    with pytest.raises(ValueError, match=r"groups \(3\) must divide .* out_channels \(4\)"):
        P.conv2d(zeros(2, 6, 7, 8), zeros(4, 2, 3, 3), groups=3)


def test_bad_stride_and_pad():
    with pytest.raises(ValueError, match=r"stride_h must be >= 1, got 0"):
        P.conv2d(X, W, stride=(0, 1))
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        P.conv2d(X, W, pad=-1)
    with pytest.raises(ValueError, match=r"pad_h must be in \[0, kernel_h = 3\), got 3"):
        P.max_pool2d(X, 3, 2, pad=3)


def test_mask_size_mismatch():
    wrong = P.make_mask("uniform", (6, 6), 0.5)
    with pytest.raises(ValueError, match=r"is 6x6, expected 5x6"):
        P.conv2d(X, W, mask=wrong)
    with pytest.raises(ValueError, match=r"input_mask is 6x6, expected the input size 7x8"):
        P.PoolPlan(2, 3, (7, 8), 2, 2, 0, "max", input_mask=wrong)
    with pytest.raises(ValueError, match=r"is 6x6, expected 7x8"):
        P.ConvPlan(2, 3, (7, 8), 4, 3, input_mask=wrong)


def test_pool_mode():
    with pytest.raises(ValueError, match=r"unknown mode 'min'"):
        P.PoolPlan(1, 1, (4, 4), 2, 2, mode="min")
    with pytest.raises(ValueError, match=r"max pooling needs x"):
        P.PoolPlan(1, 1, (4, 4), 2, 2).backward(None, zeros(1, 1, 2, 2))


# --- masks ---------------------------------------------------------------------------------------

def test_unknown_mask_kind_lists_kinds():
    with pytest.raises(ValueError, match=r"unknown mask kind 'random'; expected one of uniform, grid, "
                                         r"pooling, impact"):
        P.make_mask("random", (4, 4), 0.5)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("kind", ["uniform", "grid"])
def test_bad_rate(kind, rate):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        P.make_mask(kind, (4, 4), rate)


def test_bad_mask_arguments():
    with pytest.raises(TypeError, match=r"rate must be a real number, got str"):
        P.make_mask("uniform", (4, 4), "half")
    with pytest.raises(ValueError, match=r"size must be a pair"):
        P.make_mask("uniform", 16, 0.5)
    with pytest.raises(ValueError, match=r"h must be >= 1, got 0"):
        P.make_mask("uniform", (0, 4), 0.5)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        P.make_mask("uniform", (4, 4), 0.5, seed=-1)
    with pytest.raises(ValueError, match=r"kind 'pooling' needs pool="):
        P.make_mask("pooling", (4, 4), 0.5)
    with pytest.raises(ValueError, match=r"pool must be \(kernel, stride\)"):
        P.make_mask("pooling", (4, 4), 0.5, pool=(3,))
    with pytest.raises(ValueError, match=r"0 <= pad < kernel"):
        P.make_mask("pooling", (8, 8), 0.5, pool=(2, 2, 2))
    with pytest.raises(ValueError, match=r"kind 'impact' needs scores"):
        P.make_mask("impact", (4, 4), 0.5)
    with pytest.raises(ValueError, match=r"scores are only used by kind 'impact'"):
        P.make_mask("uniform", (4, 4), 0.5, scores=zeros(4, 4))
    with pytest.raises(ValueError, match=r"make_mask: scores must have shape \(4, 4\), got \(4, 5\)"):
        P.make_mask("impact", (4, 4), 0.5, scores=zeros(4, 5))
    with pytest.raises(TypeError, match=r"make_mask: scores must be float32, got int64"):
        P.make_mask("impact", (4, 4), 0.5, scores=np.zeros((4, 4), np.int64))
    bad = zeros(4, 4)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"scores must be finite, got scores\[6\] = inf"):
        P.make_mask("impact", (4, 4), 0.5, scores=bad)


@pytest.mark.parametrize("indices,pattern", [
    ([3, 1], r"indices must be strictly increasing, got indices\[1\] = 1 after indices\[0\] = 3"),
    ([1, 1], r"strictly increasing"),
    ([0, 12], r"indices\[1\] must be in \[0, 12\) \(h\*w\), got 12"),
    ([-1], r"indices\[0\] must be in \[0, 12\)"),
    ([], r"count must be in \[1, 12\]"),
])
def test_from_indices_invalid(indices, pattern):
    with pytest.raises(ValueError, match=pattern):
        P.Mask.from_indices((3, 4), np.array(indices, np.int64))


def test_from_indices_types():
    with pytest.raises(TypeError, match=r"indices must have an integer dtype, got float64"):
        P.Mask.from_indices((3, 4), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"indices must have 1 dimension"):
        P.Mask.from_indices((3, 4), np.array([[1, 2]]))


# --- layers --------------------------------------------------------------------------------------

def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels\[1\] must be in \[0, 3\), got 3"):
        P.softmax_cross_entropy(zeros(2, 3), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels\[0\] must be in \[0, 3\), got -1"):
        P.softmax_cross_entropy_backward(zeros(2, 3), np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must fit int32"):
        P.softmax_cross_entropy(zeros(2, 3), np.array([0, 2**32]))
    with pytest.raises(TypeError, match=r"labels must have an integer dtype, got float32"):
        P.softmax_cross_entropy(zeros(2, 3), zeros(2))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), got \(3,\)"):
        P.softmax_cross_entropy(zeros(2, 3), np.array([0, 1, 2]))


@pytest.mark.parametrize("size", [0, 2, 4, -1])
def test_bad_lrn_size(size):
    with pytest.raises(ValueError, match=rf"local_size must be odd and >= 1, got {size}"):
        P.lrn(zeros(1, 4, 2, 2), size=size)


def test_bad_lrn_constants():
    with pytest.raises(ValueError, match=r"k must be finite and > 0"):
        P.lrn(zeros(1, 4, 2, 2), k=0.0)
    with pytest.raises(ValueError, match=r"alpha and beta must be finite"):
        P.lrn(zeros(1, 4, 2, 2), alpha=float("nan"))
    x = zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match=r"lrn: out must not overlap x"):
        P.lrn(x, out=x)


@pytest.mark.parametrize("ratio", [1.0, -0.5, float("nan")])
def test_bad_dropout_ratio(ratio):
    with pytest.raises(ValueError, match=r"ratio must be finite and in \[0, 1\)"):
        P.dropout(zeros(10), ratio, seed=0)


# --- the C API directly --------------------------------------------------------------------------

def _last_error() -> str:
    return ffi.string(lib.perf_last_error()).decode()


def test_c_mask_create_null_pointers():
    out = ffi.new("perf_mask **")
    st = lib.perf_mask_create(3, 4, 2, ffi.NULL, 0, out)
    assert st == lib.PERF_STATUS_INVALID_ARGUMENT
    assert "perf_mask_create" in _last_error() and "indices" in _last_error()
    idx = ffi.new("int32_t[]", [1, 2])
    assert lib.perf_mask_create(3, 4, 2, idx, 0, ffi.NULL) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert "out must not be NULL" in _last_error()


def test_c_mask_create_unsorted():
    out = ffi.new("perf_mask **")
    idx = ffi.new("int32_t[]", [5, 2, 7])
    assert lib.perf_mask_create(3, 4, 3, idx, 0, out) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert "strictly increasing" in _last_error()
    assert out[0] == ffi.NULL


def test_c_last_error_reset_semantics_and_status_strings():
    assert ffi.string(lib.perf_status_string(lib.PERF_STATUS_SUCCESS)).decode() == "success"
    assert ffi.string(lib.perf_status_string(lib.PERF_STATUS_INVALID_ARGUMENT)).decode() == \
        "invalid argument"
    assert lib.perf_set_num_threads(0) == lib.PERF_STATUS_INVALID_ARGUMENT
    with pytest.raises(ValueError):
        P.set_num_threads(0)


def test_c_null_arguments_elsewhere():
    assert lib.perf_conv_plan_create(ffi.NULL, ffi.NULL, ffi.NULL, ffi.new("perf_conv_plan **")) == \
        lib.PERF_STATUS_INVALID_ARGUMENT
    assert "desc" in _last_error()
    assert lib.perf_interp_forward(ffi.NULL, 1, ffi.NULL, ffi.NULL) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert "mask" in _last_error()
    assert lib.perf_relu_forward(4, ffi.NULL, ffi.NULL) == lib.PERF_STATUS_INVALID_ARGUMENT
    assert lib.perf_fc_forward(1, 1, 1, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL) == \
        lib.PERF_STATUS_INVALID_ARGUMENT
    lib.perf_mask_destroy(ffi.NULL)  # a no-op
    assert lib.perf_mask_count(ffi.NULL) == 0 and lib.perf_mask_indices(ffi.NULL) == ffi.NULL


def test_c_conv_workspace_too_small():
    plan = P.ConvPlan(1, 2, (5, 5), 2, 3)
    if plan.workspace_bytes == 0:
        pytest.skip("this plan needs no workspace")
    x, w, y = zeros(1, 2, 5, 5), zeros(2, 2, 3, 3), zeros(1, 2, 3, 3)
    st = lib.perf_conv_forward(plan._ptr, ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", w),
                               ffi.NULL, ffi.from_buffer("float[]", y), plan._ws,
                               plan.workspace_bytes - 1)
    assert st == lib.PERF_STATUS_INVALID_ARGUMENT and "workspace_bytes" in _last_error()
