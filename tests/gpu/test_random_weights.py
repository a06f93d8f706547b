"""`random:` sources at full size on a GPU (marked `gpu`: run with `pytest -m gpu` where CUDA is)."""

from __future__ import annotations

import pytest
import torch

from cluster.doubles.random_weights import build_random_pipeline


@pytest.mark.gpu
def test_full_size_sdxl_builds_on_gpu_in_bf16():
    pipeline = build_random_pipeline("sdxl", torch.device("cuda"), torch.bfloat16)
    assert next(pipeline.unet.parameters()).dtype == torch.bfloat16
