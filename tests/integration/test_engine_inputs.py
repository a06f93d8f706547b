"""What a text-to-image model does with an input image (cluster/engine/renderer.py, tiny real
pipelines on the CPU): image to image with a strength, an inpaint whose pixels outside the mask
are the input's exactly, each the same alone or in a batch; and the output formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cluster.images import masks
from cluster.images.encoding import png_text
from cluster.spec.errors import ErrorCode
from cluster.spec.request import RenderRequest
from tests.conftest import images, pixels

SIZE = 256


def photo(seed: int = 0, size: int = SIZE) -> bytes:
    """An input image: smooth colours with noise, as a PNG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, (x + y) // 2], axis=-1) * 255 // size
    noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    return buffer.getvalue()


def left_half_mask(size: int = SIZE) -> bytes:
    """OpenAI's convention made canonical: the left half transparent (repainted)."""
    rgba = np.full((size, size, 4), 255, np.uint8)
    rgba[:, : size // 2, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return masks.canonical(buffer.getvalue(), "alpha", (size, size))


def ask(model: str = "flux-schnell", **changes) -> RenderRequest:
    return RenderRequest(**({"model": model, "prompt": "a lighthouse", "width": SIZE, "height": SIZE, "steps": 2,
                             "seed": 7} | changes))


@pytest.fixture(params=["flux_renderer", "sdxl_renderer"])
def engine(request):
    return request.getfixturevalue(request.param)


def model_of(engine) -> str:
    return engine.spec.name


def test_inpaint_keeps_every_pixel_outside_the_mask_exactly(engine):
    source = pixels(photo())
    [inpainted] = images(engine, ask(model_of(engine), init_image=photo(), mask=left_half_mask()))
    assert np.array_equal(inpainted[:, SIZE // 2:], source[:, SIZE // 2:])  # the kept half: the input's
    assert not np.array_equal(inpainted[:, : SIZE // 2], source[:, : SIZE // 2])  # the masked half: repainted


def test_image_to_image_follows_its_strength_and_is_the_same_alone_or_batched(engine):
    model = model_of(engine)
    gentle, strong = images(engine, ask(model, init_image=photo(), strength=0.3, steps=4),
                            ask(model, init_image=photo(), strength=1.0, steps=4))
    [text] = images(engine, ask(model, steps=4))
    assert not np.array_equal(gentle, strong) and not np.array_equal(gentle, text)
    # Nearer the input at a low strength than at full strength.
    source = pixels(photo()).astype(int)
    assert np.abs(gentle - source).mean() < np.abs(strong - source).mean()
    alone = images(engine, ask(model, init_image=photo(), strength=0.5, seed=11))
    together = images(engine, ask(model, init_image=photo(1), strength=0.5, seed=3),
                      ask(model, init_image=photo(), strength=0.5, seed=11))
    assert np.array_equal(alone[0], together[1])  # one device batch, or alone: the same pixels


def test_an_input_of_another_size_is_rendered_at_the_requested_size(flux_renderer):
    [result] = flux_renderer.render([ask(init_image=photo(size=320), strength=0.6)])
    assert result.ok and Image.open(io.BytesIO(result.image)).size == (SIZE, SIZE)


@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_each_output_format_is_what_it_says(flux_renderer, fmt, pil):
    [result] = flux_renderer.render([ask(output_format=fmt, output_quality=80, init_image=photo(),
                                             mask=left_half_mask())])
    assert result.ok and Image.open(io.BytesIO(result.image)).format == pil
    if fmt == "png":  # the sampling metadata says what was done
        text = png_text(result.image)
        assert (text["mode"], text["strength"]) == ("inpaint", "1.0")


@pytest.mark.parametrize(("changes", "param", "words"), [
    ({"mask": b"mask"}, "mask", "needs an input image"),
    ({"strength": 0.5}, "strength", "only with an input image"),
    ({"init_image": b"x", "strength": 0.0}, "strength", "more than 0 and at most 1"),
    ({"init_image": b"x", "strength": 1.5}, "strength", "more than 0 and at most 1"),
    ({"init_image": b"x", "strength": 0.3}, "strength", "0.3 of 2 steps runs no denoising step"),
    ({"output_format": "gif"}, "output_format", "png, jpeg, webp"),
    ({"output_quality": 101}, "output_quality", "0..100"),
])
def test_what_the_core_refuses_names_its_field(local_config, changes, param, words):
    error = local_config.spec("flux-schnell").resolve(ask(**changes))
    assert error.code == ErrorCode.INVALID_PARAMETER and error.param == param and words in error.message


def test_an_edit_model_takes_neither_a_mask_nor_a_strength(local_config):
    spec = local_config.spec("flux-kontext")
    assert spec.resolve(ask("flux-kontext", init_image=b"x", mask=b"m")).param == "mask"
    assert spec.resolve(ask("flux-kontext", init_image=b"x", strength=0.5)).param == "strength"
    assert spec.resolve(ask("flux-kontext", init_image=b"x")).mode == "edit"


# --- previews (cluster/engine/previews.py) -------------------------------------------------------

def test_preview_steps_are_evenly_spaced_and_never_the_last():
    from cluster.engine.previews import preview_steps

    assert preview_steps(3, 4) == [1, 2, 3] and preview_steps(1, 28) == [14] and preview_steps(3, 28) == [7, 14, 21]
    assert preview_steps(3, 2) == [1] and preview_steps(0, 10) == [] and preview_steps(2, 1) == []


def test_previews_come_at_their_steps_and_never_change_the_final_pixels(engine):
    """Each image of a batch that asked gets its previews (another image of the batch, none);
    the final images are bit for bit those of the same requests without previews."""
    model = model_of(engine)
    asked = [ask(model, steps=4, seed=21, partial_images=3), ask(model, steps=4, seed=22)]
    _, [batch] = engine.plan([engine.spec.resolve(r) for r in asked])
    seen = []
    [denoised] = engine.denoise(batch, on_preview=lambda image, index, picture: seen.append(
        (image.request.seed, index, picture.size)))
    side = SIZE // engine.pipeline.vae_scale_factor
    assert seen == [(21, 0, (side, side)), (21, 1, (side, side)), (21, 2, (side, side))]  # latent resolution
    with_previews = [pixels(r.image) for r in engine.encode(denoised)]
    without = images(engine, ask(model, steps=4, seed=21), ask(model, steps=4, seed=22))
    assert all(np.array_equal(a, b) for a, b in zip(with_previews, without))
