"""The Renderer as a user sees it: metadata, errors per request, edit model, health, loading."""

from __future__ import annotations

import io
import shutil

import fsspec
import numpy as np
import pytest
from PIL import Image

from cluster.engine.renderer import Renderer
from cluster.images.encoding import png_text
from cluster.spec.errors import ErrorCode
from cluster.spec.request import RenderRequest
from cluster.weights.sources import ModelLoadError
from tests.conftest import pixels


def small(model="flux-schnell", **fields) -> RenderRequest:
    base = dict(model=model, prompt="a cat", seed=1, width=256, height=256, steps=1)
    return RenderRequest(**(base | fields))


def test_sampling_metadata_present_by_default(flux_renderer):
    [result] = flux_renderer.render([small(prompt="a café in Paris", negative_prompt="rain", seed=3, steps=2, guidance=4.0)])
    text = png_text(result.image)
    assert text["prompt"] == "a café in Paris" and text["negative_prompt"] == "rain"
    assert (text["seed"], text["steps"], text["guidance"], text["model"]) == ("3", "2", "4.0", "flux-schnell")


def test_sampling_metadata_absent_when_off(flux_renderer):
    [result] = flux_renderer.render([small(add_sampling_metadata=False)])
    assert png_text(result.image) == {}


def test_bad_request_fails_alone(flux_renderer):
    results = flux_renderer.render([small(prompt="ok"), small(steps=0), small(width=100, height=100),
                                    small(model="flux-dev")])
    assert [r.ok for r in results] == [True, False, False, False]
    assert results[1].error.param == "steps" and results[1].error.text().startswith("steps must be")
    assert "100*100" in results[2].error.message
    assert results[3].error.code == ErrorCode.MODEL_NOT_FOUND


def test_real_api_size_renders(sdxl_renderer):
    [result] = sdxl_renderer.render([small("stable-diffusion-xl", width=1024, height=1024)])
    assert result.ok and pixels(result.image).shape == (1024, 1024, 3)


def test_edit_model_renders_from_input_image(kontext_renderer):
    buf = io.BytesIO()
    Image.new("RGB", (512, 384), (200, 30, 30)).save(buf, format="PNG")
    results = kontext_renderer.render([small("flux-kontext", init_image=buf.getvalue(), width=512, height=384, n=2)])
    assert all(r.ok for r in results) and pixels(results[0].image).shape == (384, 512, 3)
    [bad] = kontext_renderer.render([small("flux-kontext", init_image=b"not an image")])
    assert bad.error.text() == "image cannot be decoded"


def test_loads_from_local_directory_and_fsspec_uris(local_config, tiny_sd15_dir, tmp_path):
    """The same loading code as real weights: a local dir, file:// and memory:// URIs."""
    local_copy = tmp_path / "sd15"
    shutil.copytree(tiny_sd15_dir, local_copy)
    memory = fsspec.filesystem("memory")
    for path in local_copy.rglob("*"):
        if path.is_file():
            memory.pipe(f"/weights/sd15/{path.relative_to(local_copy)}", path.read_bytes())

    request = small("stable-diffusion-v1.5", width=512, height=512)
    outputs = []
    for source in (str(local_copy), f"file://{local_copy}", "memory://weights/sd15"):
        spec = local_config.spec("stable-diffusion-v1.5").model_copy(update={"source": source, "warmup": False})
        [result] = Renderer(spec, device="cpu").render([request])
        outputs.append(pixels(result.image))
    assert all(np.array_equal(outputs[0], other) for other in outputs[1:])


def test_broken_model_directory_is_a_clear_error(local_config, tiny_sd15_dir, tmp_path):
    broken = tmp_path / "sd15"
    shutil.copytree(tiny_sd15_dir, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"garbage")
    spec = local_config.spec("stable-diffusion-v1.5").model_copy(update={"source": str(broken)})
    with pytest.raises(ModelLoadError, match=f"cannot load model stable-diffusion-v1.5 from {broken}: "):
        Renderer(spec, device="cpu")
