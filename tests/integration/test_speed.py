"""Faster renders (cluster/engine/speed.py) on the tiny FLUX pipeline, on this machine's CPU:

- `lossless` (the default) is bit-identical to a renderer with no step cache configured;
- `fast` (TaylorSeer: a fixed schedule) changes pixels, is identical alone and in a batch of
  fast requests, and never shares a device batch with lossless ones; a First Block Cache renders
  fast requests one image a batch; a model without a step cache renders `fast` as lossless;
- torchao's int8 weight-only quantization renders; fp8 is refused on a CPU with a clear error.

Regional compile is tested on the one compiled model of tests/integration/test_hotswap.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from cluster.engine.renderer import Renderer
from cluster.images.encoding import png_text
from cluster.spec.request import RenderRequest
from cluster.spec.settings import FastSettings
from tests.conftest import images


def renderer(local_config, model: str = "flux-dev", **changes) -> Renderer:
    spec = local_config.spec(model).model_copy(update={"warmup": False, **changes})
    return Renderer(spec, device="cpu")


@pytest.fixture(scope="module")
def dev(local_config) -> Renderer:
    return renderer(local_config)


def ask(seed: int, quality: str | None = None, model: str = "flux-dev", size: int = 256) -> RenderRequest:
    return RenderRequest(model=model, prompt="a lighthouse", seed=seed, width=size, height=size, steps=12,
                         quality=quality)


def test_lossless_is_bit_identical_to_a_model_without_a_step_cache(dev, local_config):
    plain = renderer(local_config, fast=FastSettings(method="none"))
    assert np.array_equal(images(dev, ask(1, "lossless"))[0], images(plain, ask(1))[0])
    assert np.array_equal(images(dev, ask(1))[0], images(plain, ask(1, "fast"))[0])  # no cache: fast is lossless


def test_fast_changes_pixels_is_the_same_alone_and_batched_and_never_mixes(dev):
    [lossless] = images(dev, ask(2, "lossless"))
    [alone] = images(dev, ask(2, "fast"))
    assert not np.array_equal(alone, lossless)  # the cache skipped computation
    batched = images(dev, ask(1, "fast"), ask(2, "fast"), ask(3, "fast"))
    assert np.array_equal(batched[1], alone)
    mixed = [ask(4, "fast"), ask(4, "lossless"), ask(5, "fast")]
    _, batches = dev.plan([dev.resolve(r) for r in mixed])
    assert sorted(sorted(i.request_index for i in batch) for batch in batches) == [[0, 2], [1]]
    assert np.array_equal(images(dev, *mixed)[1], images(dev, ask(4, "lossless"))[0])
    assert np.array_equal(images(dev, ask(2, "lossless"))[0], lossless)  # the cache is off again


def test_the_quality_is_in_the_png_and_a_model_without_a_cache_says_lossless(dev, local_config):
    [fast] = dev.render([ask(6, "fast")])
    assert png_text(fast.image)["quality"] == "fast"
    schnell = renderer(local_config, "flux-schnell")
    [ignored] = schnell.render([ask(6, "fast", model="flux-schnell")])
    assert png_text(ignored.image)["quality"] == "lossless"
    refused = dev.render([RenderRequest(model="flux-dev", prompt="x", quality="turbo")])[0]
    assert refused.error.param == "quality" and "lossless or fast" in refused.error.text()


def test_a_first_block_cache_renders_fast_requests_one_image_a_batch(local_config):
    engine = renderer(local_config, fast=FastSettings(method="first_block", threshold=0.5))
    requests = [ask(7, "fast"), ask(8, "fast"), ask(9, "lossless"), ask(10, "lossless")]
    _, batches = engine.plan([engine.resolve(r) for r in requests])
    assert sorted(len(batch) for batch in batches) == [1, 1, 2]
    [alone] = images(engine, ask(8, "fast"))
    assert np.array_equal(images(engine, *requests)[1], alone)


def test_int8_weight_only_renders_and_fp8_needs_a_recent_gpu(local_config, dev):
    quantized = renderer(local_config, quantize="int8_weight_only")
    [picture] = images(quantized, ask(11))
    [full] = images(dev, ask(11))
    assert picture.shape == full.shape and not np.array_equal(picture, full)  # lossy, as said
    with pytest.raises(ValueError, match="fp8 needs a GPU of compute capability 8.9"):
        renderer(local_config, quantize="fp8")
