"""The speed options on a CUDA GPU (marked `gpu`: skipped without CUDA; run `pytest -m gpu`), on
the tiny pipelines moved to the GPU in bf16:

- bf16 batch invariance: an image rendered alone and inside a batch of three, compared. GPUs
  promise no bit identity across batch shapes (kernels differ); the test asserts the pictures
  agree to within 1/255 on average and prints the largest difference, so a regression shows;
- regional compile warmed up at its sizes: batch sizes 1..4 at those sizes never recompile;
- the step cache (fast): alone and in a batch of fast requests, compared the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cluster.engine.renderer import Renderer
from cluster.spec.request import RenderRequest
from tests.conftest import pixels

pytestmark = pytest.mark.gpu


def engine(local_config, model: str, **changes) -> Renderer:
    return Renderer(local_config.spec(model).model_copy(update={"warmup": False, "dtype": "bfloat16", **changes}),
                    device="cuda")


def ask(model: str, seed: int, quality: str = "lossless", n: int = 1) -> RenderRequest:
    return RenderRequest(model=model, prompt="a lighthouse", seed=seed, width=512, height=512, steps=12, n=n,
                         quality=quality)


def alone_and_batched(renderer: Renderer, model: str, quality: str) -> tuple[np.ndarray, np.ndarray]:
    [alone] = renderer.render([ask(model, 2, quality)])
    batched = renderer.render([ask(model, 1, quality), ask(model, 2, quality), ask(model, 3, quality)])
    return pixels(alone.image).astype(float), pixels(batched[1].image).astype(float)


def test_bf16_images_agree_alone_and_batched(local_config):
    alone, batched = alone_and_batched(engine(local_config, "flux-schnell"), "flux-schnell", "lossless")
    print(f"\nbf16 alone vs batched: mean |diff| {np.abs(alone - batched).mean():.3f}, max {np.abs(alone - batched).max()}")
    assert np.abs(alone - batched).mean() <= 1.0


def test_fast_images_agree_alone_and_batched(local_config):
    alone, batched = alone_and_batched(engine(local_config, "flux-dev"), "flux-dev", "fast")
    print(f"\nfast alone vs batched: mean |diff| {np.abs(alone - batched).mean():.3f}, max {np.abs(alone - batched).max()}")
    assert np.abs(alone - batched).mean() <= 1.0


def test_compiled_never_recompiles_within_its_warmed_sizes(local_config):
    renderer = engine(local_config, "flux-dev", compile=True, compile_sizes=["512*512"], max_batch_size=4)
    torch._dynamo.config.error_on_recompile = True
    try:
        for n in (1, 2, 3, 4):
            assert all(r.ok for r in renderer.render([ask("flux-dev", n, n=n)]))
    finally:
        torch._dynamo.config.error_on_recompile = False
