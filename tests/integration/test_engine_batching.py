"""Seed-offset batching: an image is bit-identical on CPU whether rendered alone or in any batch."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cluster.spec.request import RenderRequest
from tests.conftest import pixels


def mixed_requests(model: str) -> list[RenderRequest]:
    """Requests of several shapes, so batches mix requests and shapes."""
    return [
        RenderRequest(model=model, prompt="a lighthouse at dusk", seed=10, n=3, width=512, height=512, steps=2),
        RenderRequest(model=model, prompt="a red fox", seed=99, n=1, width=512, height=512, steps=2),
        RenderRequest(model=model, prompt="a castle, watercolor", seed=5, n=2, width=256, height=384, steps=2),
        RenderRequest(model=model, prompt="a bowl of fruit", seed=7, n=2, width=512, height=512, steps=2,
                      negative_prompt="blurry"),
        RenderRequest(model=model, prompt="a robot", seed=1234, n=1, width=512, height=512, steps=2),
    ]


def image_key(request: RenderRequest, seed: int) -> tuple:
    return (request.prompt, seed, request.width, request.height, request.negative_prompt)


def render_by_key(renderer, requests, batch_size: int) -> tuple[dict, int]:
    renderer.max_batch_size = batch_size
    try:
        results = renderer.render(requests)
    finally:
        renderer.max_batch_size = renderer.spec.max_batch_size
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return {image_key(requests[r.request_index], r.seed): pixels(r.image) for r in results}, max(
        r.batch_size for r in results)


@pytest.mark.parametrize("fixture", ["flux_renderer", "sdxl_renderer"])
def test_batched_equals_single_bit_identical(fixture, request):
    renderer = request.getfixturevalue(fixture)
    requests = mixed_requests(renderer.spec.name)
    # Reference: every image alone, as its own 1-image request seeded seed + i.
    singles = [RenderRequest(**{**r.__dict__, "seed": r.seed + i, "n": 1}) for r in requests for i in range(r.n)]
    reference, _ = render_by_key(renderer, singles, batch_size=1)
    assert len(reference) == 9

    rng = random.Random(0)
    for batch_size in (1, 3, 4):
        shuffled = requests[:]
        rng.shuffle(shuffled)
        got, largest = render_by_key(renderer, shuffled, batch_size)
        assert largest == batch_size  # batching really happened at this size
        assert got.keys() == reference.keys()
        for key, image in got.items():
            assert np.array_equal(image, reference[key]), f"batch {batch_size}: {key} differs from single render"


def test_seeds_offset_per_image_and_reported(flux_renderer):
    results = flux_renderer.render([
        RenderRequest(model="flux-schnell", prompt="a cat", seed=42, n=4, width=256, height=256, steps=1),
        RenderRequest(model="flux-schnell", prompt="a dog", seed=7, n=2, width=256, height=256, steps=1),
    ])
    assert [(r.request_index, r.index, r.seed) for r in results] == [
        (0, 0, 42), (0, 1, 43), (0, 2, 44), (0, 3, 45), (1, 0, 7), (1, 1, 8)]
    images = [pixels(r.image) for r in results]
    assert not np.array_equal(images[0], images[1])  # different seeds, different images


def test_missing_seed_drawn_consecutive_and_reproducible(flux_renderer):
    first = flux_renderer.render([RenderRequest(model="flux-schnell", prompt="a cat", n=2, width=256, height=256, steps=1)])
    s = first[0].seed
    assert first[1].seed == s + 1
    again = flux_renderer.render([RenderRequest(model="flux-schnell", prompt="a cat", seed=s, n=2, width=256,
                                                height=256, steps=1)])
    assert all(np.array_equal(pixels(a.image), pixels(b.image)) for a, b in zip(first, again))
