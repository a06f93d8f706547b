"""What a text-to-image model does with an input image (cluster/engine/renderer.py, tiny real
pipelines on the CPU): image to image with a strength, an inpaint whose pixels outside the mask
are the input's exactly, each the same alone or in a batch; a FLUX model's inpaints rendered by
its Fill weights when it has them; and the output formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cluster.engine.renderer import Renderer
from cluster.images import masks
from cluster.images.encoding import png_text
from cluster.spec.errors import ErrorCode
from cluster.spec.loras import LoraRef
from cluster.spec.request import RenderRequest
from cluster.weights.sources import ModelLoadError
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


@pytest.fixture(scope="module")
def fill_renderer(local_config) -> Renderer:
    """flux-schnell with FLUX.1 Fill weights (tiny), warmed up as a replica is: inpaints too (at
    a small default size and batch, to keep the warm-up cheap here)."""
    spec = local_config.spec("flux-schnell").model_copy(update={
        "fill": "tiny:flux-fill", "warmup": True, "default_size": "256*256", "max_batch_size": 2})
    return Renderer(spec, device="cpu")


def test_a_flux_model_with_fill_weights_inpaints_with_them_and_nothing_else(fill_renderer, flux_renderer):
    inpaint = ask(init_image=photo(), mask=left_half_mask())
    [filled], [own] = images(fill_renderer, inpaint), images(flux_renderer, inpaint)
    source = pixels(photo())
    assert np.array_equal(filled[:, SIZE // 2:], source[:, SIZE // 2:])  # outside the mask: the input's
    assert not np.array_equal(filled[:, : SIZE // 2], own[:, : SIZE // 2])  # inside: other weights painted it
    assert type(fill_renderer._pipeline_for("inpaint")).__name__ == "FluxFillPipeline"
    [result] = fill_renderer.render([inpaint])
    assert png_text(result.image)["guidance"] == "30.0"  # Fill's own guidance, when the request gives none
    # Text to image and image to image stay the model's own, and neither set of weights changed.
    assert np.array_equal(images(fill_renderer, ask())[0], images(flux_renderer, ask())[0])
    img2img = ask(init_image=photo(), strength=0.5)
    assert np.array_equal(images(fill_renderer, img2img)[0], images(flux_renderer, img2img)[0])
    fill_renderer.check_health()
    assert "fill_transformer" in fill_renderer.base.modules


def test_fill_weights_take_no_adapters_nor_negative_prompt(fill_renderer):
    [adapted, negative] = fill_renderer.render([
        ask(init_image=photo(), mask=left_half_mask(), loras=(LoraRef("some/adapter"),)),
        ask(init_image=photo(), mask=left_half_mask(), negative_prompt="fog")])
    assert (adapted.error.param, negative.error.param) == ("loras", "negative_prompt")
    assert "Fill weights" in adapted.error.message and "Fill weights" in negative.error.message


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


def test_a_configured_tiny_autoencoder_draws_the_previews_at_full_size(local_config, flux_renderer):
    spec = local_config.spec("flux-schnell").model_copy(update={"preview_decoder": "tiny:flux", "warmup": False})
    engine = Renderer(spec, device="cpu")
    _, [batch] = engine.plan([spec.resolve(ask(steps=3, seed=5, partial_images=2))])
    seen = []
    [denoised] = engine.denoise(batch, on_preview=lambda image, index, picture: seen.append((index, picture)))
    assert [(index, picture.size) for index, picture in seen] == [(0, (SIZE, SIZE)), (1, (SIZE, SIZE))]
    assert np.asarray(seen[0][1]).std() > 0  # drawn, not blank
    [final] = [pixels(r.image) for r in engine.encode(denoised)]
    assert np.array_equal(final, images(flux_renderer, ask(steps=3, seed=5))[0])  # the image itself: unchanged


def test_a_preview_decoder_of_another_latent_space_is_refused_at_load(local_config):
    spec = local_config.spec("flux-schnell").model_copy(update={"preview_decoder": "random:flux"})
    with pytest.raises(ModelLoadError, match="preview decoder of model flux-schnell from random:flux: it decodes "
                                             "16 latent channels; the model has 4"):
        Renderer(spec, device="cpu")
