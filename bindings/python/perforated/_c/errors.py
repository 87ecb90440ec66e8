"""Exceptions carrying the C library's messages, and the one function that raises them."""
from __future__ import annotations

from .lib import ffi, lib


class PerforatedError(RuntimeError):
    """Base class of errors reported by libperforated (the C message is the exception text)."""


class InvalidArgumentError(PerforatedError, ValueError):
    """PERF_STATUS_INVALID_ARGUMENT: a bad size, pointer or descriptor."""


class UnsupportedError(PerforatedError):
    """PERF_STATUS_UNSUPPORTED: a valid request this build cannot serve (e.g. CUDA off)."""


class DeviceError(PerforatedError):
    """PERF_STATUS_DEVICE_ERROR: a CUDA or cuBLAS call failed."""


class InternalError(PerforatedError):
    """PERF_STATUS_INTERNAL_ERROR: a bug in the library."""


_BY_STATUS = {
    lib.PERF_STATUS_INVALID_ARGUMENT: InvalidArgumentError,
    lib.PERF_STATUS_UNSUPPORTED: UnsupportedError,
    lib.PERF_STATUS_OUT_OF_MEMORY: MemoryError,
    lib.PERF_STATUS_DEVICE_ERROR: DeviceError,
    lib.PERF_STATUS_INTERNAL_ERROR: InternalError,
}


def check(status: int) -> None:
    """Raise the exception matching a non-success perf_status, with the C message."""
    if status == lib.PERF_STATUS_SUCCESS:
        return
    message = ffi.string(lib.perf_last_error()).decode("utf-8", "replace")
    name = ffi.string(lib.perf_status_string(status)).decode()
    raise _BY_STATUS.get(status, PerforatedError)(f"{message} [{name}]")
