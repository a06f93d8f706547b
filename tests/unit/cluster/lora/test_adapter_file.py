"""The checked adapter file (cluster/lora/adapter_file.py) against the tiny FLUX and SDXL pipelines:
what a LoRA may hold is exactly LoRA matrices of the denoiser's linear layers; everything else
is refused naming the key, before the pipeline sees any of it, and the base weights never change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cluster.engine.speed import denoiser
from cluster.lora.adapter_file import AdapterChecker
from cluster.lora.cache import LocalLora, LoraUnavailable
from cluster.spec.loras import Lora
from cluster.weights.base_weights import BaseWeights
from tests import hostile_adapters


def local(path: Path) -> LocalLora:
    data = path.read_bytes()
    return LocalLora(Lora(path.name, "local", str(path), 1.0), path, hashlib.sha256(data).hexdigest(), len(data))


@pytest.fixture(scope="module")
def checker(flux_renderer):
    return AdapterChecker(flux_renderer.pipeline, denoiser(flux_renderer.pipeline), "flux-schnell", max_rank=8)


def refusal(checker, path: Path) -> str:
    with pytest.raises(LoraUnavailable) as refused:
        checker.read(local(path))
    assert refused.value.error.param == "loras"
    return refused.value.error.message


def edited(tmp_path: Path, name: str, change) -> Path:
    tensors = load_file(str(hostile_adapters.clean(tmp_path)))
    change(tensors)
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path


def test_a_diffusers_adapter_is_read_with_every_layer(checker, tmp_path):
    adapter = checker.read(local(hostile_adapters.clean(tmp_path)))
    assert adapter.rank == 4 and adapter.layers
    assert all(name in checker.targets for name in adapter.layers)


def test_norm_values_of_a_control_lora_are_refused_by_key(checker, flux_renderer, tmp_path):
    message = refusal(checker, hostile_adapters.with_norms(tmp_path, flux_renderer))
    assert "norm_" in message and "not a LoRA A or B matrix" in message


def test_an_a_matrix_wider_than_its_layer_is_refused_with_the_shapes(checker, flux_renderer, tmp_path):
    message = refusal(checker, hostile_adapters.wide(tmp_path, flux_renderer))
    in_features = flux_renderer.pipeline.transformer.x_embedder.in_features
    assert f"x_embedder of shapes A [4, {2 * in_features}]" in message


@pytest.mark.parametrize(("name", "change", "words"), [
    ("bias", lambda t: t.update({"transformer.x_embedder.lora_B.bias": torch.zeros(3)}), "lora_B.bias, not a LoRA"),
    ("dora", lambda t: t.update({"transformer.x_embedder.lora_magnitude_vector": torch.ones(3)}),
     "lora_magnitude_vector"),
    ("conv", lambda t: t.update({"transformer.x_embedder.lora_A.weight": torch.zeros(4, 4, 1, 1)}),
     "4 dimensions"),
    ("ints", lambda t: t.update({k: v.to(torch.int32) for k, v in list(t.items())[:1]}), "not floating point"),
    ("text", lambda t: t.update({"text_encoder.layer.lora_A.weight": torch.zeros(4, 4)}), "layers of text_encoder"),
    ("nan", lambda t: t.update({k: v * float("nan") for k, v in list(t.items())[:1]}), "not finite"),
    ("orphan", lambda t: t.pop(next(k for k in t if k.endswith("lora_A.weight"))), "without its A matrix"),
    ("unknown", lambda t: t.update({"transformer.nowhere.lora_A.weight": torch.zeros(4, 4),
                                    "transformer.nowhere.lora_B.weight": torch.zeros(4, 4)}),
     "no linear layer nowhere"),
])
def test_anything_but_lora_matrices_is_refused_naming_it(checker, tmp_path, name, change, words):
    assert words in refusal(checker, edited(tmp_path, name, change))


def test_a_rank_over_the_models_cap_is_refused(flux_renderer, tmp_path):
    checker = AdapterChecker(flux_renderer.pipeline, denoiser(flux_renderer.pipeline), "flux-schnell", max_rank=2)
    assert "rank 4; this model takes ranks 1..2" in refusal(checker, hostile_adapters.clean(tmp_path))


@pytest.mark.parametrize("content", [b"", b"\x00" * 8, b"\xff" * 16, (2**40).to_bytes(8, "little") + b"{}",
                                     (12).to_bytes(8, "little") + b"[" * 12, (2).to_bytes(8, "little") + b"{}"])
def test_files_that_are_no_safetensors_are_refused(checker, tmp_path, content):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(content)
    refusal(checker, path)


def test_alpha_is_folded_into_b(checker, tmp_path):
    path = edited(tmp_path, "alpha", lambda t: t.update(
        {f"{k.removesuffix('.lora_A.weight')}.alpha": torch.tensor(2.0) for k in list(t) if k.endswith("lora_A.weight")}))
    plain, halved = checker.read(local(hostile_adapters.clean(tmp_path))), checker.read(local(path))
    name = next(iter(plain.layers))
    assert torch.equal(halved.layers[name].up, plain.layers[name].up * 0.5)  # alpha 2 over rank 4


def test_base_weights_see_a_value_written_in_place_and_a_swapped_layer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    base = BaseWeights({"model": model})
    assert base.problem() is None
    with torch.no_grad():
        model[1].weight.data.fill_(7.0)
    assert "1.weight changed its values" in base.problem()
    model[1] = torch.nn.LayerNorm(4)
    assert "not the tensor the model was loaded with" in base.problem()


def test_hostile_files_leave_the_renderer_healthy_and_its_pixels_alone(flux_renderer, tmp_path):
    from cluster.spec.request import RenderRequest
    from tests.conftest import images

    request = RenderRequest(model="flux-schnell", prompt="a harbour", seed=3, width=256, height=256, steps=2)
    [before] = images(flux_renderer, request)
    for path in (hostile_adapters.with_norms(tmp_path, flux_renderer), hostile_adapters.wide(tmp_path, flux_renderer)):
        error = flux_renderer.adapters.problem((local(path).lora,), {str(path): local(path)})
        assert error is not None and error.param == "loras"
    flux_renderer.check_health()
    [after] = images(flux_renderer, request)
    assert np.array_equal(before, after)


def test_another_trainers_layout_is_converted_then_checked_the_same(sdxl_renderer, tmp_path):
    """A kohya-style file (lora_unet_*, lora_down/lora_up, alpha) of the same adapter reads as the
    very same layers as diffusers' own layout: converted by the pipeline's loader, not refused."""
    from cluster.doubles.tiny_loras import build_tiny_lora

    diffusers_file = build_tiny_lora("sdxl", tmp_path / "a", seed=1)
    kohya = {}
    for key, value in load_file(str(diffusers_file)).items():
        name = "lora_unet_" + key.removeprefix("unet.").rsplit(".lora_", 1)[0].replace(".", "_")
        kohya[f"{name}.lora_down.weight" if ".lora_A." in key else f"{name}.lora_up.weight"] = value
        if ".lora_A." in key:
            kohya[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
    kohya_file = tmp_path / "kohya.safetensors"
    save_file(kohya, str(kohya_file))
    checker = AdapterChecker(sdxl_renderer.pipeline, denoiser(sdxl_renderer.pipeline), "stable-diffusion-xl", 8)
    ours, theirs = checker.read(local(diffusers_file)), checker.read(local(kohya_file))
    assert ours.layers.keys() == theirs.layers.keys() and len(ours.layers) == 32
    assert all(torch.equal(ours.layers[n].down, theirs.layers[n].down) and torch.equal(ours.layers[n].up, theirs.layers[n].up)
               for n in ours.layers)


def test_the_alpha_diffusers_saved_in_the_metadata_is_applied_and_dora_refused(flux_renderer, checker, tmp_path):
    """`save_lora_weights(..., transformer_lora_adapter_metadata=...)` records lora_alpha in the
    file's metadata; diffusers scales by it, and so do we. DoRA there is refused, not ignored."""
    import json

    plain_file = hostile_adapters.clean(tmp_path)
    tensors = load_file(str(plain_file))
    for name, metadata, words in (("alpha", {"transformer.lora_alpha": 2, "transformer.r": 4}, None),
                                  ("rs", {"transformer.lora_alpha": 2, "transformer.use_rslora": True}, None),
                                  ("dora", {"transformer.lora_alpha": 4, "transformer.use_dora": True}, "use_dora")):
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(metadata)})
        if words:
            assert words in refusal(checker, path)
            continue
        plain, saved = checker.read(local(plain_file)), checker.read(local(path))
        layer = next(iter(plain.layers))
        factor = 0.5 if name == "alpha" else 2 / 4 ** 0.5  # alpha / r, or alpha / sqrt(r) with rsLoRA
        assert torch.allclose(saved.layers[layer].up, plain.layers[layer].up * factor)
