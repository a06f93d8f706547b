"""The NVIDIA driver's CUDA version, and whether a torch build can run on it.

A torch wheel built for CUDA 12.8 needs a driver that supports CUDA 12.8 or later (R570+); on
an older driver torch sees no device at all, which looks like a missing GPU. The driver says
what it supports through `cuDriverGetVersion` in `libcuda.so.1`, which needs no device and no
context, so it is asked directly (ctypes), before torch touches CUDA.
"""

from __future__ import annotations

import ctypes


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, or None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:  # CUDA_SUCCESS
        return None
    return version.value // 1000, version.value % 1000 // 10


def too_old_for(torch_cuda: str, driver: tuple[int, int]) -> str | None:
    """Why a torch built for `torch_cuda` ("12.8") cannot run on `driver`, or None when it can.
    A build for a newer major version (torch 2.13's default wheel is CUDA 13) sees no device on
    an older driver. Within a major version CUDA's minor-version compatibility runs some kernels
    on an older driver but not all (no PTX JIT), so the image's floor is the driver of its own
    CUDA (README: R570 for 12.8), and an older one is refused here, not at the first kernel."""
    major, minor = (int(part) for part in torch_cuda.split(".")[:2])
    if driver >= (major, minor):
        return None
    return f"torch is built for CUDA {major}.{minor}; the driver supports CUDA {driver[0]}.{driver[1]} at most"
