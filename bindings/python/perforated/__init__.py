"""perforated: perforated convolutions (Figurnov et al., NIPS 2016) on a C library with BLAS.

The numpy API: masks (``make_mask``), convolution (``conv2d``, ``conv2d_backward``), interpolation,
pooling and the other layers of NIN / AlexNet / VGG-16, each with its backward (from :mod:`.ops`).
Networks: :class:`Model` (the paper's networks, trained and perforated), :class:`PerforationPlan` and
:class:`GraphModel` (any network as a graph, e.g. from ``perforated.onnx.load``), from :mod:`.graph`.
The parts of the package and their order are in the README (Layout).
"""
from ._c.lib import LIBRARY_PATH, ffi, lib
from ._c.errors import (DeviceError, InternalError, InvalidArgumentError, PerforatedError,
                     UnsupportedError)

from ._c.device import Context, cuda_available, cuda_device_count, default_context
from .ops.masks import KINDS as MASK_KINDS, Mask, count_for_rate, grid_shape, make_mask
from .ops.interp import interpolate, interpolate_backward
from .ops.conv import ConvPlan, conv2d, conv2d_backward
from .ops.pooling import (PoolPlan, avg_pool2d, avg_pool2d_backward, global_avg_pool2d,
                      global_avg_pool2d_backward, max_pool2d, max_pool2d_backward)
from .ops.layers import (bias_add, bias_backward, dropout, dropout_backward, linear, linear_backward,
                     lrn, lrn_backward, relu, relu_backward, softmax_cross_entropy,
                     softmax_cross_entropy_backward)
from .graph.model import Model
from .graph.plan import PerforationPlan
from .graph.graph_model import GraphModel

__version__ = "0.2.0"


def build_info() -> str:
    """Version, BLAS vendor and threads, OpenMP threads, CUDA on/off of the loaded library."""
    return ffi.string(lib.perf_build_info()).decode()


def get_num_threads() -> int:
    return int(lib.perf_get_num_threads())


def set_num_threads(n: int) -> None:
    from ._c.errors import check

    check(lib.perf_set_num_threads(int(n)))
