"""Per-model validation against the contract's limits (shared/contracts/dashscope.md)."""

from __future__ import annotations

import pytest

from cluster.spec.catalogue import CATALOGUE, ModelSpec, parse_size
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderRequest, ResolvedRequest


def resolve(model: str, sizes: str = "api", **fields):
    return CATALOGUE[model].resolve(RenderRequest(model=model, prompt=fields.pop("prompt", "a cat"), **fields), sizes)


def size(text: str) -> dict:
    w, h = parse_size(text)
    return {"width": w, "height": h}


FLUX = ["flux-schnell", "flux-dev", "flux-merged"]


@pytest.mark.parametrize("model", FLUX)
@pytest.mark.parametrize("allowed", ["512*1024", "768*512", "768*1024", "1024*576", "576*1024", "1024*1024"])
def test_flux_api_accepts_documented_sizes(model, allowed):
    assert isinstance(resolve(model, **size(allowed)), ResolvedRequest)


@pytest.mark.parametrize("model", FLUX)
@pytest.mark.parametrize("refused", ["512*512", "1024*768", "2048*2048", "1000*1000"])
def test_flux_api_refuses_other_sizes(model, refused):
    err = resolve(model, **size(refused))
    assert isinstance(err, RenderError) and (err.code, err.param) == (ErrorCode.INVALID_PARAMETER, "size")
    assert err.text().startswith(f"size {refused} is not allowed") and "allowed:" in err.message


@pytest.mark.parametrize("ok", ["512*512", "640*1024", "1024*896", "1024*1024", "512*768"])
def test_sdxl_api_accepts_grid_of_128(ok):
    assert isinstance(resolve("stable-diffusion-xl", **size(ok)), ResolvedRequest)


@pytest.mark.parametrize("refused", ["384*512", "1152*1024", "520*512", "1024*1000"])
def test_sdxl_api_refuses_off_grid(refused):
    err = resolve("stable-diffusion-xl", **size(refused))
    assert isinstance(err, RenderError) and "512..1024 in steps of 128" in err.message


def test_sd15_api_takes_only_512():
    assert isinstance(resolve("stable-diffusion-v1.5", **size("512*512")), ResolvedRequest)
    err = resolve("stable-diffusion-v1.5", **size("768*768"))
    assert isinstance(err, RenderError) and "512*512" in err.message


def test_render_sizes_are_wider_than_api_sizes():
    """Batch jobs and the CLI take any size the model can render (multiples of 16 for FLUX)."""
    assert isinstance(resolve("flux-schnell", "render", **size("640*384")), ResolvedRequest)
    err = resolve("flux-schnell", "render", **size("650*384"))
    assert isinstance(err, RenderError) and "steps of 16" in err.message
    assert isinstance(resolve("stable-diffusion-v1.5", "render", **size("520*512")), ResolvedRequest)


@pytest.mark.parametrize(("model", "lo", "hi"), [("flux-schnell", 1, 100), ("stable-diffusion-xl", 1, 500),
                                                 ("stable-diffusion-v1.5", 1, 500)])
def test_steps_range(model, lo, hi):
    assert isinstance(resolve(model, steps=lo), ResolvedRequest)
    assert isinstance(resolve(model, steps=hi), ResolvedRequest)
    for bad in (lo - 1, hi + 1):
        err = resolve(model, steps=bad)
        assert isinstance(err, RenderError) and err.param == "steps"
        assert err.text().startswith("steps must be") and str(bad) in err.message


def test_guidance_range_for_sd_models_named_as_a_door_spells_it():
    assert isinstance(resolve("stable-diffusion-xl", guidance=15), ResolvedRequest)
    err = resolve("stable-diffusion-xl", guidance=15.5)
    assert isinstance(err, RenderError) and err.param == "guidance" and err.message.startswith("must be 1..15")
    assert err.text("scale").startswith("scale must be 1..15")  # DashScope's name for SD guidance
    err = resolve("stable-diffusion-v1.5", guidance=0.5)
    assert isinstance(err, RenderError) and err.text().startswith("guidance must be")


def test_guidance_range_for_flux():
    assert isinstance(resolve("flux-dev", guidance=0), ResolvedRequest)
    err = resolve("flux-dev", guidance=-1)
    assert isinstance(err, RenderError) and err.text().startswith("guidance must be")


@pytest.mark.parametrize("model", list(CATALOGUE))
def test_n_range(model):
    extra = {"init_image": b"x"} if CATALOGUE[model].edit else {}
    assert isinstance(resolve(model, n=4, **extra), ResolvedRequest)
    for bad in (0, 5):
        err = resolve(model, n=bad, **extra)
        assert isinstance(err, RenderError) and err.param == "n" and err.text().startswith("n must be 1..4")


def test_defaults_filled_per_model():
    r = resolve("flux-schnell")
    assert (r.width, r.height, r.steps, r.guidance, r.n) == (1024, 1024, 4, 3.5, 1)
    assert resolve("flux-dev").steps == 50
    assert resolve("flux-merged").steps == 30
    sdxl = resolve("stable-diffusion-xl")
    assert (sdxl.steps, sdxl.guidance, sdxl.width) == (50, 10.0, 1024)
    assert resolve("stable-diffusion-v1.5").width == 512


def test_missing_seed_is_drawn_and_given_seed_kept():
    assert resolve("flux-schnell", seed=42).seed == 42
    drawn = {resolve("flux-schnell").seed for _ in range(5)}
    assert all(0 <= s <= 2**31 - 1 for s in drawn) and len(drawn) > 1
    err = resolve("flux-schnell", seed=-1)
    assert isinstance(err, RenderError) and err.param == "seed" and err.text().startswith("seed must be 0..")


def test_empty_prompt_is_bad_request():
    err = resolve("flux-schnell", prompt="   ")
    assert isinstance(err, RenderError) and (err.code, err.param) == (ErrorCode.EMPTY_PROMPT, "prompt")
    assert not err.code.retryable


def test_flux_prompt_truncated_at_500_characters():
    r = resolve("flux-schnell", prompt="a" * 800)
    assert r.prompt == "a" * 500


def test_sd_prompt_truncated_at_75_words():
    words = [f"w{i}" for i in range(100)]
    r = resolve("stable-diffusion-xl", prompt=" ".join(words), negative_prompt=" ".join(words))
    assert r.prompt.split() == words[:75] and r.negative_prompt.split() == words[:75]


def test_an_edit_model_needs_an_image_and_other_models_render_from_one():
    err = resolve("flux-kontext")
    assert isinstance(err, RenderError) and err.param == "image" and err.text().startswith("image is required")
    assert resolve("flux-kontext", init_image=b"png").mode == "edit"
    image = resolve("flux-schnell", init_image=b"png")
    assert (image.mode, image.strength, image.mask) == ("image", 0.8, None)
    inpaint = resolve("flux-schnell", init_image=b"png", mask=b"mask")
    assert (inpaint.mode, inpaint.strength, inpaint.mask) == ("inpaint", 1.0, b"mask")
    assert resolve("flux-schnell").mode == "text" and resolve("flux-schnell").strength is None


def test_parse_size():
    assert parse_size("1024*576") == (1024, 576)
    assert parse_size("512x768") == (512, 768)
    assert parse_size("big") is None


def test_a_flux_model_with_fill_weights_inpaints_at_their_guidance_and_takes_what_they_take():
    spec = CATALOGUE["flux-dev"].model_copy(update={"fill": "black-forest-labs/FLUX.1-Fill-dev"})
    inpaint = spec.resolve(RenderRequest(model="flux-dev", prompt="a cat", init_image=b"png", mask=b"mask"))
    assert (inpaint.mode, inpaint.guidance, inpaint.quality) == ("inpaint", 30.0, "lossless")
    assert spec.resolve(RenderRequest(model="flux-dev", prompt="a cat", init_image=b"png", mask=b"m",
                                      guidance=12.0)).guidance == 12.0  # a request's own is kept
    image = spec.resolve(RenderRequest(model="flux-dev", prompt="a cat", init_image=b"png"))
    assert image.guidance == 3.5  # image to image: the model's own weights and defaults
    refused = spec.resolve(RenderRequest(model="flux-dev", prompt="a cat", init_image=b"png", mask=b"m",
                                         negative_prompt="fog"))
    assert isinstance(refused, RenderError) and refused.param == "negative_prompt"


def test_fill_weights_are_for_flux_models_only():
    with pytest.raises(ValueError, match="only FLUX models take Fill weights"):
        ModelSpec.model_validate(CATALOGUE["stable-diffusion-xl"].model_dump() | {"fill": "tiny:flux-fill"})
