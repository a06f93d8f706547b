"""A compiled model (regional compile warmed up at two sizes, cluster/engine/speed.py) and LoRA
adapters on it (cluster/lora/hotswap.py), on the tiny FLUX pipeline compiled for real
(torch.compile on this CPU, about 30 s) with tiny adapters made on the spot:

- both warmed sizes render at batch sizes 1 and 2 with recompiles made errors, and `fast`
  renders lossless (no step cache on a compiled model, and its PNG says so);

- switching between no adapters, one adapter, two with scales, and back, at batch sizes 1 and 2,
  never recompiles (dynamo's recompiles are made errors);
- scale 0 and no adapters render the compiled model's own pixels, bit for bit;
- the slot renders what PEFT's `set_adapters` renders on the eager model, within one level of 255
  (merged matrices: the same sum, another rounding order);
- a request is the same alone and inside a batch of its set;
- image to image and inpaint, with and without adapters, run on the graphs the text warm-up
  compiled (their pipelines are made from the compiled one, and the transformer sees the same shapes);
- a set whose ranks add up to more than `lora_rank`, an adapter with text-encoder layers and a
  DoRA adapter are refused naming `loras`, before any batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cluster.doubles.tiny_loras import build_tiny_lora
from cluster.engine.renderer import Renderer
from cluster.images.encoding import encode, png_text
from cluster.lora.cache import LoraCache
from cluster.lora.hotswap import SlotAdapters
from cluster.spec.errors import ErrorCode
from cluster.spec.loras import LoraRef
from cluster.spec.request import RenderRequest
from tests.conftest import images

RANKS = {"a": 4, "b": 8, "c": 8}  # a + b fit the slot's rank of 16; a + b + c do not


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    for seed, (name, rank) in enumerate(RANKS.items(), start=1):
        build_tiny_lora("flux", root / name, seed=seed, rank=rank)
    layers = load_file(root / "a" / "pytorch_lora_weights.safetensors")
    layers["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.ones(4, 32)
    layers["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.ones(32, 4)
    (root / "te").mkdir()
    save_file(layers, root / "te" / "pytorch_lora_weights.safetensors")
    layers = load_file(root / "a" / "pytorch_lora_weights.safetensors")  # DoRA: a magnitude per layer
    layers["transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector"] = torch.ones(32)
    (root / "dora").mkdir()
    save_file(layers, root / "dora" / "pytorch_lora_weights.safetensors")
    return root


def renderer(local_config, root, compile: bool) -> Renderer:
    spec = local_config.spec("flux-schnell")
    spec = spec.model_copy(update={"warmup": False, "compile": compile, "compile_sizes": ["256*256", "512*256"],
                                   "max_batch_size": 2, "lora_rank": 16,
                                   "loras": spec.loras.model_copy(update={"local_root": str(root), "max": 3})})
    return Renderer(spec, device="cpu", lora_cache=LoraCache(root / "cache"))


@pytest.fixture(scope="module")
def compiled(local_config, root):
    engine = renderer(local_config, root, compile=True)
    assert isinstance(engine.adapters, SlotAdapters)
    return engine


def ask(seed: int, *loras: tuple[str, float]) -> RenderRequest:
    return RenderRequest(model="flux-schnell", prompt="a lighthouse", seed=seed, width=256, height=256, steps=2,
                         loras=tuple(LoraRef(f"./{name}/pytorch_lora_weights.safetensors", scale)
                                     for name, scale in loras))


@pytest.fixture
def no_recompiles():
    torch._dynamo.config.error_on_recompile = True
    try:
        yield
    finally:
        torch._dynamo.config.error_on_recompile = False


def test_both_warmed_sizes_render_without_recompiling_and_fast_is_lossless(compiled, no_recompiles):
    for width, n in ((256, 1), (512, 2), (256, 2), (512, 1)):
        request = RenderRequest(model="flux-schnell", prompt="a fox", seed=n, width=width, height=256, steps=2, n=n)
        assert all(r.ok for r in compiled.render([request]))
    [fast] = compiled.render([dataclasses.replace(ask(1), quality="fast")])
    assert png_text(fast.image)["quality"] == "lossless"


def test_switching_sets_never_recompiles_and_no_adapters_is_the_compiled_model(compiled, no_recompiles):
    [base] = images(compiled, ask(1))
    [one] = images(compiled, ask(1, ("a", 1.0)))
    [two] = images(compiled, ask(1, ("a", 0.7), ("b", -0.5)))
    images(compiled, ask(2, ("b", 1.0)), ask(3, ("b", 1.0)))
    [zero] = images(compiled, ask(1, ("a", 0.0)))
    [after] = images(compiled, ask(1))
    assert np.array_equal(zero, base) and np.array_equal(after, base)
    assert not np.array_equal(one, base) and not np.array_equal(two, one)
    assert compiled.adapters.misses == 4 and compiled.adapters.kept_sets()  # every set written into the slot


def test_the_slot_renders_what_peft_renders_on_the_eager_model(compiled, local_config, root, no_recompiles):
    eager = renderer(local_config, root, compile=False)
    for loras in ((("a", 1.0),), (("a", 0.7), ("b", -0.5))):
        [slot] = images(compiled, ask(1, *loras))
        [peft] = images(eager, ask(1, *loras))
        [base] = images(eager, ask(1))
        difference = np.abs(slot.astype(int) - peft.astype(int))
        assert difference.max() <= 1, loras
        assert np.abs(peft.astype(int) - base.astype(int)).mean() > 100 * difference.mean()  # the LoRA shows


def test_a_request_is_the_same_alone_and_in_a_batch_of_its_set(compiled, no_recompiles):
    [alone] = images(compiled, ask(5, ("b", 0.8)))
    batched = images(compiled, ask(4, ("b", 0.8)), ask(5, ("b", 0.8)))
    assert np.array_equal(batched[1], alone)


def test_image_to_image_and_inpaint_reuse_the_compiled_graphs(compiled, no_recompiles):
    gray = encode(Image.new("RGB", (256, 256), "gray"))
    left = encode(Image.fromarray(np.tile(np.arange(256) < 128, (256, 1)).astype(np.uint8) * 255, "L"))
    image = dataclasses.replace(ask(1), init_image=gray, strength=0.6)
    inpaint = dataclasses.replace(ask(1, ("a", 1.0)), init_image=gray, mask=left)
    assert all(r.ok for r in compiled.render([image, inpaint, dataclasses.replace(inpaint, seed=2)]))


def test_sets_the_slot_cannot_take_are_refused_naming_loras(compiled):
    [over] = compiled.render([ask(1, ("a", 1.0), ("b", 1.0), ("c", 0.3))])
    assert over.error.code == ErrorCode.INVALID_PARAMETER and over.error.param == "loras"
    assert "adding up to 20" in over.error.message and "lora_rank" in over.error.message
    [text_encoder] = compiled.render([ask(1, ("te", 1.0))])
    assert text_encoder.error.code == ErrorCode.INVALID_PARAMETER and text_encoder.error.param == "loras"
    assert "text_encoder" in text_encoder.error.message
    [dora] = compiled.render([ask(1, ("dora", 1.0))])
    assert dora.error.param == "loras" and "lora_magnitude_vector, not a LoRA A or B matrix" in dora.error.message
