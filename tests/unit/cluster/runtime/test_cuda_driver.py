"""The driver's CUDA against torch's (cluster/runtime/cuda_driver.py), and the doctor's line for it."""

from __future__ import annotations

import pytest
import torch

from cluster.runtime.cuda_driver import driver_cuda_version, too_old_for
from serve.doctor import cuda_driver


@pytest.mark.parametrize(("build", "driver", "runs"), [
    ("12.8", (12, 8), True), ("12.8", (13, 0), True), ("12.8", (12, 4), False),
    ("13.0", (12, 9), False),  # torch 2.13's default wheel on an R570 driver: no device at all
])
def test_a_build_runs_on_a_driver_of_its_cuda_or_newer(build, driver, runs):
    assert (too_old_for(build, driver) is None) is runs


def test_the_doctor_names_the_versions_and_the_fix():
    line = cuda_driver("12.8", (12, 4))
    assert not line.ok and line.detail == "torch is built for CUDA 12.8; the driver supports CUDA 12.4 at most"
    assert "R570" in line.fix
    assert cuda_driver("12.8", (12, 8)).ok
    assert cuda_driver("12.8", None).detail.startswith("no NVIDIA driver here")
    assert cuda_driver(None, (12, 8)).detail == "torch is a CPU build"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a driver")
def test_without_a_driver_libcuda_says_nothing():
    assert driver_cuda_version() is None
